// What a hostile run found, against the real daemon: a backup must never cost the
// guest a write, never extend a damaged chain, never end another run's job, and never
// leave a checkpoint, job or file behind whatever kills it.
import { mkdir, mkdtemp, readFile, readdir, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import test, { type ExecutionContext } from 'ava';

import { BackupSet, restore } from '../../src/backup/index.js';
import { runBackup } from '../../src/backup/engine/engine.js';
import { PENDING_CHECKPOINTS_FILE } from '../../src/backup/set/pending-checkpoints.js';
import { runDirPath } from '../../src/backup/engine/run-dir.js';
import { JobType } from '../../src/index.js';
import { connectSystem, guestWrite } from '../helpers/daemon.js';
import { run } from '../helpers/process.js';
import { jsonLines, runCli, startCli } from '../cli/helpers.js';
import { imagesIdentical, mirroredDomain } from './engine-helpers.js';

const MiB = 2 ** 20;

async function smallFileSystem(t: ExecutionContext, sizeMiB: number): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'lvb-tmpfs-'));
  await run('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m,mode=0700`, 'tmpfs', dir]);
  t.teardown(async () => {
    await run('umount', ['-l', dir]).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });
  return dir;
}

async function freeBytes(dir: string): Promise<number> {
  const { statfs } = await import('node:fs/promises');
  const info = await statfs(dir);
  return Number(info.bavail) * Number(info.bsize);
}

/** Leaves about `leaveMiB` free in the file system of `dir` (what another process filling the disk does). */
async function fillUp(dir: string, leaveMiB: number): Promise<void> {
  const fill = (await freeBytes(dir)) - leaveMiB * MiB;
  if (fill > 0) await run('fallocate', ['-l', String(fill), join(dir, 'filler')]);
}

async function checkpointNames(domain: { listAllCheckpoints(): Promise<Array<{ name: string }>> }): Promise<string[]> {
  return (await domain.listAllCheckpoints()).map((c) => c.name).sort();
}

async function manifestCheckpoints(dest: string): Promise<string[]> {
  const set = await BackupSet.open(dest);
  return set.backups
    .map((b) => b.checkpoint)
    .filter((c): c is string => c !== null)
    .sort();
}

/** Polls: libvirt sends no event when a job starts. */
async function waitUntil(what: string, condition: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  // libvirt's job queries fail transiently while a job starts or ends.
  while (!(await condition().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

test('a destination filling up during a pull backup ends the job before any guest write is refused', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  // Mounted before the domain starts: QEMU runs in a mount namespace copied at its start.
  const fs = await smallFileSystem(t, 160);
  const m = await mirroredDomain(t, conn, 'flt-space', [{ sizeMiB: 64 }]);
  await m.write(0, 0x11, '0', '48M');
  const dest = join(fs, 'set');

  const error = await t.throwsAsync(
    runBackup({
      domain: m.vm.name,
      dest,
      connection: conn,
      hooks: {
        afterJobStart: async () => {
          // Another process takes the space while the job runs; the guard must see it
          // and end the job before the guest overwrites data copy-before-write must save.
          await fillUp(fs, 8);
          await conn
            .waitFor('job-completed', {
              match: (d) => d.uuid === m.vm.domain.uuid,
              // libvirt's job queries fail transiently while a job ends: ask again at the next event.
              check: async () => (await m.vm.domain.getJobInfo().catch(() => undefined))?.type === JobType.NONE,
              timeoutMs: 3_000,
            })
            .catch(() => undefined);
          for (const offset of ['0', '16M', '32M']) await m.write(0, 0x22, offset, '16M');
        },
      },
    }),
  );
  t.is((error as { code?: string }).code, 'NO_SPACE', error?.message);
  t.regex(error!.message, /not enough free space .* the job was ended so that no guest write could fail/);
  t.is((await m.vm.domain.getJobInfo()).type, JobType.NONE);
  t.deepEqual(await checkpointNames(m.vm.domain), [], 'the run left no checkpoint');
  // Every guest write reached the disk.
  await m.vm.domain.destroy();
  t.true(await imagesIdentical(m.vm.disks[0]!.path, 'qcow2', await snapshotNow(m), 'raw'), 'the disk holds every write');
});

async function snapshotNow(m: Awaited<ReturnType<typeof mirroredDomain>>): Promise<string> {
  await m.snapshot('now');
  return m.referenceAt('now', 0);
}

test('a pull backup whose scratch could outgrow the free space is refused before any data moves', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  // 48 MiB of data: with its scratch it needs 48 + 48 + 16 MiB of reserve, more than the 80;
  // without, 64, which leaves the guard's samples a margin while the copy runs.
  const fs = await smallFileSystem(t, 80);
  const m = await mirroredDomain(t, conn, 'flt-nospace', [{ sizeMiB: 64 }]);
  await m.write(0, 0x31, '0', '48M');
  const dest = join(fs, 'set');
  const refused = await runCli(['backup', m.vm.name, '--dest', dest, '--json']);
  t.is(refused.code, 1, refused.stderr);
  const error = jsonLines(refused.stdout).at(-1)!;
  t.is(error['code'], 'NO_SPACE', refused.stdout);
  t.regex(String(error['message']), /of scratch for guest writes during the backup and .* of backup data/);
  t.deepEqual((await readdir(dest)).sort(), ['manifest.json']);
  t.deepEqual(await checkpointNames(m.vm.domain), []);

  // With the scratch on another file system that has room, the same backup fits.
  const scratch = await mkdtemp(join(m.dir, 'scratch-'));
  t.teardown(() => rm(scratch, { recursive: true, force: true }));
  const done = await runCli(['backup', m.vm.name, '--dest', dest, '--scratch-dir', scratch]);
  t.is(done.code, 0, done.stderr);
  t.deepEqual(await readdir(scratch), [], 'scratch files removed');
  t.is((await BackupSet.open(dest)).backups.length, 1);
});

test('a second backup of the same domain, into another set, is refused while the first runs; the first completes', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'flt-twice', [{ sizeMiB: 64 }]);
  await m.write(0, 0x41, '0', '32M');
  await m.snapshot('first');
  const first = join(m.dir, 'set-a');
  const second = join(m.dir, 'set-b');
  let secondError: unknown;
  const result = await runBackup({
    domain: m.vm.name,
    dest: first,
    connection: conn,
    hooks: {
      afterJobStart: async () => {
        secondError = await runBackup({ domain: m.vm.name, dest: second, connection: conn }).then(
          () => new Error('the second backup ran'),
          (error: unknown) => error,
        );
      },
    },
  });
  t.is((secondError as { code?: string }).code, 'DOMAIN_BUSY', String(secondError));
  t.regex((secondError as Error).message, new RegExp(`domain ${m.vm.name} is being backed up by another run \\(pid ${process.pid} .*into ${first}\\)`));
  t.is(result.level, 'full');
  const out = join(m.dir, 'out');
  await mkdir(out);
  const restored = await restore(await BackupSet.open(first), { to: out, format: 'raw' });
  t.true(await imagesIdentical(restored.disks[0]!.path, 'raw', m.referenceAt('first', 0), 'raw'));
  await t.throwsAsync(stat(join(second, 'manifest.json')), undefined, 'the refused run created nothing');
});

for (const transport of ['pull', 'push'] as const) {
  test(`${transport}: a backup killed outright leaves its job and checkpoint to the next run, which ends, deletes and continues the chain`, async (t) => {
    const conn = await connectSystem();
    t.teardown(() => conn.close());
    const m = await mirroredDomain(t, conn, `flt-kill-${transport}`, [{ sizeMiB: 768 }]);
    const dest = join(m.dir, 'set');
    await m.write(0, 0x51, '0', '4M');
    t.is((await runCli(['backup', m.vm.name, '--dest', dest, '--transport', transport])).code, 0);
    const manifest = await readFile(join(dest, 'manifest.json'));
    await m.write(0, 0x52, '0', '640M');

    const cli = startCli(['backup', m.vm.name, '--dest', dest, '--level', 'full', '--transport', transport, '--json']);
    await cli.waitForLine((line) => line.includes('"type":"start"'));
    await waitUntil('the job runs', async () => (await m.vm.domain.getJobInfo()).type !== JobType.NONE);
    cli.child.kill('SIGKILL');
    await cli.done;
    t.deepEqual(await readFile(join(dest, 'manifest.json')), manifest);
    const left = await checkpointNames(m.vm.domain);
    t.true(left.length === 2, `the killed run's checkpoint is still there: ${left.join(', ')}`);

    await m.snapshot('next');
    const next = await runCli(['backup', m.vm.name, '--dest', dest, '--transport', transport, '--json']);
    t.is(next.code, 0, next.stderr);
    const notices = jsonLines(next.stdout)
      .filter((e) => e.type === 'notice')
      .map((e) => String(e.message));
    t.true(
      notices.some((n) => /ended the (pull|push) backup job .*left behind by an interrupted run/.test(n)) || notices.some((n) => /cleaned up/.test(n)),
      notices.join('\n'),
    );
    t.true(
      notices.some((n) => /deleted checkpoint lvb-0002-/.test(n)),
      notices.join('\n'),
    );
    t.is((await m.vm.domain.getJobInfo()).type, JobType.NONE);
    t.deepEqual(await checkpointNames(m.vm.domain), await manifestCheckpoints(dest), 'libvirt holds exactly the checkpoints the set names');
    t.is((await runCli(['verify', dest])).code, 0);
    // Nothing of the killed run is left in the run directory.
    const leftovers = (await readdir(runDirPath()).catch(() => [] as string[])).filter((e) => e.startsWith('nbd-'));
    for (const entry of leftovers) t.false(entry.startsWith(`nbd-${cli.child.pid}-`), `socket directory of the killed run: ${entry}`);
    const out = join(m.dir, 'out');
    await mkdir(out);
    const restored = await restore(await BackupSet.open(dest), { to: out, format: 'raw' });
    t.true(await imagesIdentical(restored.disks[0]!.path, 'raw', m.referenceAt('next', 0), 'raw'));
  });
}

test('a domain destroyed mid-run: a clear error, the checkpoint is kept for deletion and deleted by the next run', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'flt-destroy', [{ sizeMiB: 64 }]);
  const dest = join(m.dir, 'set');
  await m.write(0, 0x61, '0', '8M');
  await runBackup({ domain: m.vm.name, dest, connection: conn });
  await m.write(0, 0x62, '0', '1M');
  const error = await t.throwsAsync(runBackup({ domain: m.vm.name, dest, connection: conn, hooks: { afterJobStart: () => m.vm.domain.destroy() } }));
  t.is((error as { code?: string }).code, 'DOMAIN_STOPPED', error?.message);
  t.regex(error!.message, /stopped during the backup/);
  t.deepEqual(
    (await readdir(dest)).filter((name) => name.startsWith('.in-progress') || name.startsWith('.scratch-')),
    [],
    "the run's journal and scratch are gone: its job ended with the domain",
  );
  const pending = JSON.parse(await readFile(join(dest, PENDING_CHECKPOINTS_FILE), 'utf8')) as { checkpoints: Array<{ name: string }> };
  t.is(pending.checkpoints.length, 1);
  const verified = await runCli(['verify', dest]);
  t.is(verified.code, 0, verified.stdout);
  t.regex(verified.stdout, new RegExp(`${pending.checkpoints[0]!.name} \\(left by backup 0002, which failed .*\\) still in libvirt though no backup needs it`));

  await m.vm.domain.start();
  const next = await runBackup({ domain: m.vm.name, dest, connection: conn });
  t.true(
    next.notices.some((n) => n.includes(`deleted checkpoint ${pending.checkpoints[0]!.name}`)),
    next.notices.join('\n'),
  );
  t.deepEqual(await checkpointNames(m.vm.domain), await manifestCheckpoints(dest));
  await t.throwsAsync(stat(join(dest, PENDING_CHECKPOINTS_FILE)));
});

test('a domain stopped and started again mid-run is reported as stopped, not as a failure of its own, and the set is unchanged', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'flt-restart', [{ sizeMiB: 64 }]);
  const dest = join(m.dir, 'set');
  await m.write(0, 0x61, '0', '8M');
  await runBackup({ domain: m.vm.name, dest, connection: conn });
  const before = await readFile(join(dest, 'manifest.json'), 'utf8');
  await m.write(0, 0x62, '0', '4M');
  // A handle keeps the ID it was looked up with: the current one needs a fresh lookup.
  const currentId = async () => (await conn.lookupDomainByUUID(m.vm.domain.uuid)).getId();
  const firstId = await currentId();
  const restart = async () => {
    await m.vm.domain.destroy();
    await m.vm.domain.start();
  };
  const error = await t.throwsAsync(runBackup({ domain: m.vm.name, dest, connection: conn, hooks: { afterJobStart: restart } }));
  t.not(await currentId(), firstId, 'the domain runs again, under a new ID');
  t.is((error as { code?: string }).code, 'DOMAIN_STOPPED', error?.message);
  t.regex(error!.message, /stopped during the backup and was started again/);
  t.is(await readFile(join(dest, 'manifest.json'), 'utf8'), before, 'the manifest is as it was');
  t.deepEqual(
    (await readdir(dest)).filter((name) => name.startsWith('.in-progress') || name.startsWith('.scratch-') || name.includes('-0002-')),
    [],
    'nothing of the failed run is left in the set',
  );
  t.is((await m.vm.domain.getJobInfo()).type, JobType.NONE);
  t.deepEqual(await checkpointNames(m.vm.domain), await manifestCheckpoints(dest), 'the running domain holds no checkpoint of the failed run');
  const next = await runBackup({ domain: m.vm.name, dest, connection: conn });
  t.is(next.backupId, '0002');
  t.is((await runCli(['verify', dest])).code, 0);
});

test('an incremental is never built on a damaged file; a deleted manifest is never silently replaced', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'flt-damage', [{ sizeMiB: 16 }]);
  const dest = join(m.dir, 'set');
  await m.write(0, 0x71, '0', '4M');
  const full = await runBackup({ domain: m.vm.name, dest, connection: conn });
  const file = join(dest, full.disks[0]!.file);
  // One byte flipped inside the data, through the file system.
  const bytes = await readFile(file);
  const at = bytes.length - 4096;
  bytes[at] = bytes[at]! ^ 0xff;
  await writeFile(file, bytes);
  await m.write(0, 0x72, '8M', '64k');
  const manifest = await readFile(join(dest, 'manifest.json'));
  const refused = await t.throwsAsync(runBackup({ domain: m.vm.name, dest, connection: conn }));
  t.is((refused as { code?: string }).code, 'CHECKSUM_MISMATCH', refused?.message);
  t.regex(refused!.message, new RegExp(`${full.disks[0]!.file} is damaged`));
  t.deepEqual(await readFile(join(dest, 'manifest.json')), manifest);
  const cli = await runCli(['backup', m.vm.name, '--dest', dest]);
  t.is(cli.code, 3, cli.stderr);

  // The manifest is lost: the backup files must not become orphans of a new, empty set.
  await unlink(join(dest, 'manifest.json'));
  const lost = await t.throwsAsync(runBackup({ domain: m.vm.name, dest, connection: conn }));
  t.is((lost as { code?: string }).code, 'NOT_A_SET');
  t.regex(lost!.message, /holds backup files .* but no manifest\.json/);
  await t.throwsAsync(stat(join(dest, 'manifest.json')), undefined, 'no new manifest');
  t.true((await readdir(dest)).includes(full.disks[0]!.file));
  t.deepEqual(await checkpointNames(m.vm.domain), [full.checkpoint]);
});

test('backup files, manifests and set directories are private whatever the umask, over both transports', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'flt-modes', [{ sizeMiB: 16 }]);
  await m.write(0, 0x81, '0', '1M');
  for (const umask of ['000', '022']) {
    const dest = join(m.dir, `set-${umask}`);
    for (const transport of ['pull', 'push']) {
      const main = new URL('../../src/cli/main.ts', import.meta.url).pathname;
      await run('sh', [
        '-c',
        `umask ${umask} && exec "${process.execPath}" --import=tsx "${main}" backup "${m.vm.name}" --dest "${dest}" --transport ${transport}`,
      ]);
    }
    t.is((await stat(dest)).mode & 0o777, 0o700, `set directory under umask ${umask}`);
    for (const entry of await readdir(dest)) {
      t.is((await stat(join(dest, entry))).mode & 0o777, 0o600, `${entry} under umask ${umask}`);
    }
  }
  t.is((await stat(runDirPath())).mode & 0o777, 0o700, 'the run directory holding NBD sockets is private');
});

test('writes while a pull backup runs land in the guest and the backup holds the point in time', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'flt-cbw', [{ sizeMiB: 32 }]);
  const dest = join(m.dir, 'set');
  await m.write(0, 0x91, '0', '16M');
  await m.snapshot('before');
  await runBackup({
    domain: m.vm.name,
    dest,
    connection: conn,
    hooks: { afterJobStart: () => guestWrite(m.vm.domain, 0, 0x92, '4M', '4M') },
  });
  const out = join(m.dir, 'out');
  await mkdir(out);
  const restored = await restore(await BackupSet.open(dest), { to: out, format: 'raw' });
  t.true(await imagesIdentical(restored.disks[0]!.path, 'raw', m.referenceAt('before', 0), 'raw'));
});
