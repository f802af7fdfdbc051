// Guest-consistent backups (quiesce): the real test guest's file systems frozen through its
// agent while the job starts, and thawed right after, whatever happens to the run; a
// domain without an agent refused (yes) or backed up crash-consistent (try).
import { spawn } from 'node:child_process';
import { access, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import test from 'ava';

import { BackupError, BackupSet, listBackups, restore, runBackup } from '../../src/backup/index.js';
import { connectSystem, createThrowawayDomain } from '../helpers/daemon.js';
import { checkReadOnly, fileChecksums, needsRecovery } from '../helpers/ext4-image.js';
import { startRealGuest, type RealGuest } from '../helpers/real-guest.js';
import { tempDir } from './helpers.js';

const WRITER = '/usr/local/bin/guest-writer';

/** sha256sum of the files guest-writer wrote in `dir`, computed inside the guest. */
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

const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

test('a quiesced backup of a writing guest freezes it only while the job starts, and its restore is a clean file system holding every file written before, synced or not', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const guest = await startRealGuest(t, conn, 'qz-backup');
  const dir = await tempDir(t, 'quiesce-');
  const dest = join(dir, 'set');

  await guest.sh(`${WRITER} -s /var/lib/synced 8 256 && sync`);
  // Left to the page cache: only the freeze, which syncs, puts them on the disk in time.
  await guest.sh(`${WRITER} /var/lib/unsynced 8 256`);
  const synced = await guestChecksums(guest, '/var/lib/synced');
  const unsynced = await guestChecksums(guest, '/var/lib/unsynced');
  const churn = await guest.spawn(WRITER, ['-l', '/var/lib/churn', '16', '64']);

  const seen: string[] = [];
  const result = await runBackup({
    domain: guest.name,
    dest,
    connection: conn,
    quiesce: 'yes',
    hooks: {
      whileFrozen: async () => void seen.push(`while frozen: ${String(await guest.agent('guest-fsfreeze-status'))}`),
      afterJobStart: async () => void seen.push(`after the job started: ${String(await guest.agent('guest-fsfreeze-status'))}`),
    },
  });
  await guest.sh(`kill ${churn}`);
  t.deepEqual(seen, ['while frozen: frozen', 'after the job started: thawed']);
  t.true(result.quiesced);
  const freeze = result.freeze!;
  t.log(
    `${guest.virtType}: ${freeze.fileSystems} file system(s) frozen for ${freeze.frozenMs.toFixed(0)} ms ` +
      `(freeze ${freeze.freezeMs.toFixed(0)} ms, thaw ${freeze.thawMs.toFixed(0)} ms)`,
  );
  t.true(freeze.fileSystems >= 1);
  t.true(freeze.frozenMs >= freeze.freezeMs + freeze.thawMs);
  // Generous: the guest stops writing only for the job's start, never for the copy.
  t.true(freeze.frozenMs < 10_000, `frozen for ${freeze.frozenMs} ms`);
  t.true(result.notices.some((notice) => /^froze \d+ file systems? of .* for \d+ ms while the backup job started/.test(notice)));
  t.is(await guest.agent('guest-fsfreeze-status'), 'thawed');

  const set = await BackupSet.open(dest);
  t.true(set.backups[0]!.quiesced);
  t.true(listBackups(set).backups[0]!.quiesced);
  const manifest = JSON.parse(await readFile(join(dest, 'manifest.json'), 'utf8')) as { backups: Array<{ quiesced?: boolean }> };
  t.is(manifest.backups[0]!.quiesced, true);

  const out = join(dir, 'restore');
  await mkdir(out);
  const image = (await restore(set, { to: out, format: 'raw' })).disks[0]!.path;
  // A frozen ext4 has its journal flushed: the copy is clean as it is, nothing to replay.
  t.false(await needsRecovery(image), 'the restored file system has no journal to replay');
  const fsck = await checkReadOnly(image);
  t.is(fsck.code, 0, fsck.output);
  for (const [guestDir, sums] of [
    ['/var/lib/synced', synced],
    ['/var/lib/unsynced', unsynced],
  ] as const) {
    const restored = await fileChecksums(image, guestDir, join(out, 'files'));
    for (const [name, sum] of sums) t.is(restored.get(name), sum, `${guestDir}/${name}`);
  }
});

test('a domain without a guest agent: quiesce yes fails before anything is created; try backs up crash-consistent with a notice', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const plain = await createThrowawayDomain(conn, 'qz-noagent');
  t.teardown(() => plain.cleanup());
  const dir = await tempDir(t, 'quiesce-');
  const dest = join(dir, 'set');

  for (const options of [{ quiesce: 'yes' as const }, { freezeMountpoints: ['/'] }]) {
    const error = await t.throwsAsync(runBackup({ domain: plain.name, dest, connection: conn, ...options }), { instanceOf: BackupError });
    t.is(error.code, 'QUIESCE_FAILED');
    t.regex(
      error.message,
      new RegExp(`^cannot quiesce ${plain.name}: the guest agent of ${plain.name} does not answer \\(.*agent.*\\); nothing was backed up`),
    );
    t.false(await exists(dest), 'no set directory');
    t.deepEqual(await plain.domain.listAllCheckpoints(), []);
  }

  const result = await runBackup({ domain: plain.name, dest, connection: conn, quiesce: 'try' });
  t.false(result.quiesced);
  t.is(result.freeze, null);
  t.true(
    result.notices.some((notice) => /^not quiesced: the guest agent of .* does not answer .*; the backup is crash-consistent$/.test(notice)),
    result.notices.join('\n'),
  );
  const set = await BackupSet.open(dest);
  t.false(set.backups[0]!.quiesced);
  t.false(listBackups(set).backups[0]!.quiesced);

  const invalid = await t.throwsAsync(runBackup({ domain: plain.name, dest, connection: conn, quiesce: 'no', freezeMountpoints: ['/'] }), {
    instanceOf: BackupError,
  });
  t.is(invalid.code, 'INVALID_ARGUMENT');
  const relative = await t.throwsAsync(runBackup({ domain: plain.name, dest, connection: conn, freezeMountpoints: ['var'] }), { instanceOf: BackupError });
  t.regex(relative.message, /freezeMountpoints\[0\]: must be an absolute path/);
});

test('a run killed while the guest is frozen leaves it for the next run, which thaws it first; a run failing while it is frozen thaws it at once', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const guest = await startRealGuest(t, conn, 'qz-kill');
  const dir = await tempDir(t, 'quiesce-');
  const dest = join(dir, 'set');

  const child = spawn(process.execPath, ['--import=tsx', fileURLToPath(new URL('./freeze-holder-child.ts', import.meta.url)), guest.name, dest], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  t.teardown(() => child.kill('SIGKILL'));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  await new Promise<void>((resolve, reject) => {
    child.stdout!.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`the quiesced run exited (${code}) before it froze the guest`)));
  });
  t.is(await guest.agent('guest-fsfreeze-status'), 'frozen');
  child.kill('SIGKILL');
  await exited;
  t.is(await guest.agent('guest-fsfreeze-status'), 'frozen', 'nothing thaws a guest by itself');

  const result = await runBackup({ domain: guest.name, dest, connection: conn });
  t.is(await guest.agent('guest-fsfreeze-status'), 'thawed');
  t.true(
    result.notices.some((notice) => new RegExp(`^thawed \\d+ file systems? of ${guest.name} that an interrupted run left frozen$`).test(notice)),
    result.notices.join('\n'),
  );
  t.false(result.quiesced);
  await guest.sh('echo written after the thaw > /root/after && sync');
  t.is((await guest.sh('cat /root/after')).trim(), 'written after the thaw');

  // A failure while the guest is frozen thaws it at once, and the run leaves nothing behind.
  const failed = await t.throwsAsync(
    runBackup({
      domain: guest.name,
      dest,
      connection: conn,
      quiesce: 'yes',
      hooks: {
        whileFrozen: () => {
          throw new Error('failed while frozen');
        },
      },
    }),
  );
  t.is(failed.message, 'failed while frozen');
  t.is(await guest.agent('guest-fsfreeze-status'), 'thawed');
  t.deepEqual(
    (await BackupSet.open(dest)).backups.map((backup) => backup.id),
    [result.backupId],
  );
  t.deepEqual(
    (await guest.domain.listAllCheckpoints()).map((checkpoint) => checkpoint.name),
    [result.checkpoint],
  );
});
