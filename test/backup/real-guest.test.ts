// A real guest (Debian kernel, busybox, qemu-guest-agent) writing into its own ext4
// root file system while the engine takes a full and then an incremental pull backup:
// every restored point is a clean file system once its journal is replayed, and holds,
// byte for byte, the files the guest wrote and synced before that backup began; the
// latest one boots.
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

import test from 'ava';

import { BackupSet, restore, runBackup } from '../../src/backup/index.js';
import { connectSystem } from '../helpers/daemon.js';
import { checkReadOnly, fileChecksums, needsRecovery, pathExists, replayJournal } from '../helpers/ext4-image.js';
import { startRealGuest, testGuestArtefacts, type RealGuest } from '../helpers/real-guest.js';
import { tempDir } from './helpers.js';

const WRITER = '/usr/local/bin/guest-writer';
const CHURN_DIR = '/var/lib/churn';

/** sha256sum of the files written by guest-writer in `dir`, computed inside the guest. */
async function guestChecksums(guest: RealGuest, dir: string): Promise<Map<string, string>> {
  const out = await guest.sh(`cd ${dir} && sha256sum file-*`);
  return new Map(
    out
      .trim()
      .split('\n')
      .map((line) => {
        const [sum, name] = line.split(/\s+/);
        return [name!, sum!];
      }),
  );
}

async function filesWritten(guest: RealGuest): Promise<number> {
  return Number((await guest.sh(`cat ${CHURN_DIR}/.written 2>/dev/null || echo 0`)).trim());
}

/** Resolves once the guest's writer has written `count` more files. */
async function writerAdvances(guest: RealGuest, count: number): Promise<void> {
  const from = await filesWritten(guest);
  const deadline = performance.now() + 120_000;
  while ((await filesWritten(guest)) < from + count) {
    if (performance.now() > deadline) throw new Error(`the guest's writer wrote fewer than ${count} files in 120 s`);
  }
}

test('the test guest boots under TCG, answers its agent and runs the writer its command line asks for', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const guest = await startRealGuest(t, conn, 'rg-boot', { virtType: 'qemu', cmdline: 'test_guest.writer=/var/lib/boot-writer:4:64' });
  t.log(`booted under ${guest.virtType} in ${(guest.bootMs / 1000).toFixed(1)} s`);

  t.deepEqual(await guest.agent('guest-ping'), {});
  t.is(await guest.agent('guest-fsfreeze-status'), 'thawed');
  const manifest = await readFile(join((await testGuestArtefacts()).dir, 'manifest'), 'utf8');
  const release = /^kernel-release (\S+)$/m.exec(manifest)![1]!;
  t.is((await guest.sh('uname -r')).trim(), release);
  t.regex(await guest.sh('grep " / " /proc/mounts'), /^\/dev\/vda \/ ext4 rw/);
  await guest.sh('while [ "$(cat /var/lib/boot-writer/.written 2>/dev/null || echo 0)" -lt 8 ]; do sleep 0.2; done');
  const failed = await guest.exec('/bin/sh', ['-c', 'echo oops >&2; exit 3']);
  t.deepEqual(failed, { exitCode: 3, stdout: '', stderr: 'oops\n' });
});

test('full and incremental pull backups of a guest writing to its file system restore to clean file systems holding its synced files; the latest boots', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const guest = await startRealGuest(t, conn, 'rg-backup');
  t.log(`booted under ${guest.virtType} in ${(guest.bootMs / 1000).toFixed(1)} s`);
  const dir = await tempDir(t, 'real-guest-');
  const dest = join(dir, 'set');

  // Written and synced before each backup: these must be in its restore, byte for byte.
  await guest.sh(`${WRITER} -s /var/lib/before-full 8 256 && sync`);
  const beforeFull = await guestChecksums(guest, '/var/lib/before-full');
  t.is(beforeFull.size, 8);
  // The churn goes on through both backups: files rewritten, renamed, never synced.
  const writerPid = await guest.spawn(WRITER, ['-l', CHURN_DIR, '16', '64']);
  await writerAdvances(guest, 4);

  const backup = async (level: 'full' | 'inc') => {
    const before = await filesWritten(guest);
    // The job has started (its point in time is fixed) and the guest keeps writing.
    const result = await runBackup({ domain: guest.name, dest, connection: conn, level, hooks: { afterJobStart: () => writerAdvances(guest, 4) } });
    const during = (await filesWritten(guest)) - before;
    t.log(`${level}: ${result.disks[0]!.dataBytes} bytes copied; the guest wrote ${during} files meanwhile`);
    t.true(during >= 4);
    return result;
  };
  const full = await backup('full');
  t.is(full.level, 'full');

  await guest.sh(`${WRITER} -s /var/lib/before-inc 4 128 && sync`);
  const beforeInc = await guestChecksums(guest, '/var/lib/before-inc');
  t.is(beforeInc.size, 4);
  const inc = await backup('inc');
  t.is(inc.level, 'inc');
  await guest.sh(`kill ${writerPid}`);

  const set = await BackupSet.open(dest);
  const expected = [
    { point: full, dirs: [['/var/lib/before-full', beforeFull]] as const, absent: '/var/lib/before-inc' },
    {
      point: inc,
      dirs: [
        ['/var/lib/before-full', beforeFull],
        ['/var/lib/before-inc', beforeInc],
      ] as const,
      absent: null,
    },
  ];
  for (const { point, dirs, absent } of expected) {
    const out = join(dir, `restore-${point.backupId}`);
    await mkdir(out);
    const image = (await restore(set, { to: out, at: point.backupId, format: 'raw' })).disks[0]!.path;
    const dirty = await needsRecovery(image);
    const unreplayed = await checkReadOnly(image);
    await replayJournal(image);
    const fsck = await checkReadOnly(image);
    t.log(`${point.backupId}: journal to replay: ${dirty}; e2fsck -fn before replaying it: ${unreplayed.code}, after: ${fsck.code}`);
    t.is(fsck.code, 0, `e2fsck -fn of ${point.backupId} (journal replayed: ${dirty}):\n${fsck.output}`);
    for (const [guestDir, sums] of dirs) {
      const restored = await fileChecksums(image, guestDir, join(out, 'files'));
      for (const [name, sum] of sums) t.is(restored.get(name), sum, `${guestDir}/${name} in ${point.backupId}`);
    }
    if (absent !== null) {
      t.false(await pathExists(image, absent), `${absent} is not in ${point.backupId}: it was written after`);
    }
  }
  await guest.cleanup();

  // The latest point is a working system: it boots, its kernel replays the journal,
  // and the guest itself finds its synced files intact.
  const out = join(dir, 'restore-boot');
  await mkdir(out);
  const restoredDisk = (await restore(set, { to: out, format: 'qcow2' })).disks[0]!.path;
  const restoredGuest = await startRealGuest(t, conn, 'rg-restored', { baseDisk: restoredDisk });
  t.deepEqual(await guestChecksums(restoredGuest, '/var/lib/before-full'), beforeFull);
  t.deepEqual(await guestChecksums(restoredGuest, '/var/lib/before-inc'), beforeInc);
});
