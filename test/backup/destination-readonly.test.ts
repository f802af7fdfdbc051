// The destination turns read-only in the middle of a run, as ext4 does after an I/O error
// (errors=remount-ro): the run cannot remove its own files any more. It must say so and
// exit 1 (exit 2 promises that nothing in the set changed), leave manifest.json as it
// was, and leave the files to the next run, which removes them once the disk is repaired.
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

import test, { type ExecutionContext } from 'ava';

import { runBackup } from '../../src/backup/engine/engine.js';
import { reportFor } from '../../src/cli/error-report.js';
import { connectSystem } from '../helpers/daemon.js';
import { run, tryRun } from '../helpers/process.js';
import { mirroredDomain } from './engine-helpers.js';

interface FailingDisk {
  mountPoint: string;
  /** What a failing disk does: ext4 records an error and turns read-only at once, open files or not. */
  fail(): Promise<void>;
  /** Unmount, e2fsck, mount again: what an operator does. */
  repair(): Promise<void>;
}

async function failingDisk(t: ExecutionContext): Promise<FailingDisk> {
  const dir = await mkdtemp(join(tmpdir(), 'lvb-failing-disk-'));
  const image = join(dir, 'destination.ext4');
  const mountPoint = join(dir, 'destination');
  await run('truncate', ['-s', '256M', image]);
  await run('mkfs.ext4', ['-q', '-F', '-m', '0', image]);
  await mkdir(mountPoint);
  const mount = () => run('mount', ['-o', 'loop,errors=remount-ro', image, mountPoint]);
  await mount();
  t.teardown(async () => {
    await tryRun('umount', [mountPoint]);
    await rm(dir, { recursive: true, force: true });
  });
  return {
    mountPoint,
    async fail() {
      const device = (await run('findmnt', ['-n', '-o', 'SOURCE', mountPoint])).trim();
      await writeFile(`/sys/fs/ext4/${basename(device)}/trigger_fs_error`, 'fault injected by a test\n');
    },
    async repair() {
      await run('umount', [mountPoint]);
      // e2fsck exits 1 when it fixed something.
      const checked = await tryRun('e2fsck', ['-f', '-y', image]);
      if (checked.code > 1) throw new Error(`e2fsck failed: ${checked.stdout}${checked.stderr}`);
      await mount();
    },
  };
}

// QEMU never touches the destination here (its scratch is elsewhere) and the file system
// is mounted after the domain started, so the mount exists in this namespace only and can
// be unmounted for repair (QEMU's mount namespace, copied at its start, would keep it).
test('a destination that fails into read-only mid-run is exit 1, with the files left to the next run', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'ro-dest', [{ sizeMiB: 32 }]);
  const disk = await failingDisk(t);
  const scratchDir = join(m.dir, 'scratch');
  await mkdir(scratchDir);
  const dest = join(disk.mountPoint, 'set');
  await m.write(0, 0x21, '0', '8M');
  const full = await runBackup({ domain: m.vm.name, dest, connection: conn, scratchDir });
  const manifest = await readFile(join(dest, 'manifest.json'));
  await m.write(0, 0x22, '0', '4M');

  const error = await t.throwsAsync(runBackup({ domain: m.vm.name, dest, connection: conn, scratchDir, hooks: { afterJobStart: () => disk.fail() } }));
  const report = reportFor(error);
  t.is(report.exitCode, 1, `${report.code}: ${report.message}`);
  t.regex(report.message, /read-only file system/);
  t.regex(report.message, /could not be removed .*the next backup or prune of this set removes them/);
  t.deepEqual(await readFile(join(dest, 'manifest.json')), manifest);
  t.deepEqual(await readdir(scratchDir), [], 'the scratch file, outside the set, is gone');

  await disk.repair();
  // What reached the disk before the error (the journal at least) is the next run's to remove.
  t.true((await readdir(dest)).includes('.in-progress.json'), 'the journal of the failed run is still there');
  const next = await runBackup({ domain: m.vm.name, dest, connection: conn, scratchDir });
  const expected = ['manifest.json', '.verified.json', ...full.disks.map((d) => d.file), ...next.disks.map((d) => d.file)];
  t.deepEqual((await readdir(dest)).sort(), expected.sort(), 'the set holds its backups and nothing of the failed run');
});
