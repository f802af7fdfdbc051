// libvirtd gone in the middle of a run (a crash, a restart), made by having the daemon
// drop the run's connection: what libvirt then says about its broken socket must never
// pass for an answer to a check, and the files QEMU may still be writing must never be
// deleted under it.
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import test from 'ava';

import { BackupError } from '../../src/backup/index.js';
import { runBackup } from '../../src/backup/engine/engine.js';
import { JOURNAL_FILE } from '../../src/backup/set/run-journal.js';
import { JobType } from '../../src/index.js';
import { reportFor } from '../../src/cli/error-report.js';
import { connectSystem } from '../helpers/daemon.js';
import { droppableConnection } from '../helpers/libvirt-admin.js';
import { run } from '../helpers/process.js';
import { mirroredDomain } from './engine-helpers.js';

// Each test tells its connection apart from the others of this process by client id.
test.serial('libvirtd lost while the chain is checked is DAEMON_LOST (exit 1), not a broken bitmap; nothing changes', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'lost-plan', [{ sizeMiB: 16 }]);
  const dest = join(m.dir, 'set');
  await m.write(0, 0x41, '0', '1M');
  const full = await runBackup({ domain: m.vm.name, dest, connection: conn });
  // libvirt forgets the checkpoint, so the run redefines it from the set and says so; the
  // daemon drops the run's connection right then, before the bitmap is looked at.
  await run('virsh', ['-c', 'qemu:///system', 'checkpoint-delete', m.vm.name, full.checkpoint, '--metadata']);
  const manifest = await readFile(join(dest, 'manifest.json'));
  const victim = await droppableConnection();
  t.teardown(() => victim.conn.close());
  const error = await t.throwsAsync(
    runBackup({
      domain: m.vm.name,
      dest,
      level: 'inc',
      connection: victim.conn,
      onEvent: (event) => {
        if (event.type === 'notice' && event.message.includes('redefined it')) victim.drop();
      },
    }),
  );
  t.true(error instanceof BackupError && error.code === 'DAEMON_LOST', `${(error as { code?: string }).code}: ${error?.message}`);
  t.regex(error!.message, /lost the connection to libvirtd/);
  t.is(reportFor(error).exitCode, 1);
  t.deepEqual(await readFile(join(dest, 'manifest.json')), manifest);
  t.deepEqual((await readdir(dest)).sort(), ['.verified.json', 'manifest.json', full.disks[0]!.file].sort());
  const next = await runBackup({ domain: m.vm.name, dest, level: 'inc', connection: conn });
  t.is(next.level, 'inc');
});

for (const where of ['the set', 'a scratch directory'] as const) {
  test.serial(`libvirtd lost while a pull job runs: the scratch in ${where} stays until the next run has ended the job`, async (t) => {
    const conn = await connectSystem();
    t.teardown(() => conn.close());
    const m = await mirroredDomain(t, conn, 'lost-job', [{ sizeMiB: 32 }]);
    const dest = join(m.dir, 'set');
    const scratchDir = where === 'the set' ? undefined : await mkdtemp(join(tmpdir(), 'lvb-lost-scratch-'));
    if (scratchDir !== undefined) t.teardown(() => rm(scratchDir, { recursive: true, force: true }));
    await m.write(0, 0x51, '0', '8M');
    await runBackup({ domain: m.vm.name, dest, connection: conn });
    const manifest = await readFile(join(dest, 'manifest.json'));
    await m.write(0, 0x52, '0', '1M');

    const victim = await droppableConnection();
    t.teardown(() => victim.conn.close());
    const error = await t.throwsAsync(
      runBackup({ domain: m.vm.name, dest, connection: victim.conn, ...(scratchDir ? { scratchDir } : {}), hooks: { afterJobStart: () => victim.drop() } }),
    );
    t.is((error as { code?: string }).code, 'DAEMON_LOST', error?.message);
    t.deepEqual(await readFile(join(dest, 'manifest.json')), manifest);
    // The job goes on in QEMU, and so does its copy-before-write into the scratch file.
    t.not((await m.vm.domain.getJobInfo()).type, JobType.NONE, 'the job outlives the connection');
    const scratch =
      scratchDir === undefined
        ? (await readdir(dest)).filter((name) => name.startsWith('.scratch-')).map((name) => join(dest, name))
        : (await readdir(scratchDir)).map((name) => join(scratchDir, name));
    t.is(scratch.length, 1, 'the scratch file is still there');
    if (scratchDir === undefined) {
      const journal = JSON.parse(await readFile(join(dest, JOURNAL_FILE), 'utf8')) as { creates: string[] };
      t.deepEqual(
        journal.creates.map((name) => join(dest, name)),
        scratch,
        'the journal lists the scratch file, and only it',
      );
    }
    t.false(
      (await readdir(dest)).some((name) => /^vda\.0002\./.test(name)),
      "the run's own backup file is gone",
    );

    const next = await runBackup({ domain: m.vm.name, dest, connection: conn, ...(scratchDir ? { scratchDir } : {}) });
    t.true(
      next.notices.some((notice) => /ended the pull backup job .* left behind by an interrupted run/.test(notice)),
      next.notices.join('\n'),
    );
    for (const file of scratch) await t.throwsAsync(stat(file), undefined, `${file} removed once the job had ended`);
    t.is((await m.vm.domain.getJobInfo()).type, JobType.NONE);
    t.deepEqual(
      (await readdir(dest)).filter((name) => name.startsWith('.') && name !== '.verified.json'),
      [],
      'no journal, scratch or pending checkpoint left',
    );
  });
}

test.serial('libvirtd lost while the job is being started: the push targets are left to the next run, which ends any job first', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'lost-begin', [{ sizeMiB: 16 }]);
  const dest = join(m.dir, 'set');
  await m.write(0, 0x61, '0', '4M');
  await runBackup({ domain: m.vm.name, dest, connection: conn, transport: 'push' });
  const manifest = await readFile(join(dest, 'manifest.json'));
  await m.write(0, 0x62, '0', '1M');

  // Dropped as the run asks libvirt to start the job: whether libvirt got to start it
  // (and QEMU to write the targets) is what the run cannot know.
  const victim = await droppableConnection();
  t.teardown(() => victim.conn.close());
  const error = await t.throwsAsync(
    runBackup({
      domain: m.vm.name,
      dest,
      transport: 'push',
      connection: victim.conn,
      onEvent: (event) => {
        if (event.type === 'start') victim.drop();
      },
    }),
  );
  t.is((error as { code?: string }).code, 'DAEMON_LOST', error?.message);
  t.deepEqual(await readFile(join(dest, 'manifest.json')), manifest);
  const journal = JSON.parse(await readFile(join(dest, JOURNAL_FILE), 'utf8')) as { creates: string[] };
  t.deepEqual(journal.creates, ['vda.0002.inc.qcow2'], 'the journal still lists the push target');

  const next = await runBackup({ domain: m.vm.name, dest, connection: conn, transport: 'push' });
  t.is(next.level, 'inc');
  t.is((await m.vm.domain.getJobInfo()).type, JobType.NONE);
  t.deepEqual(
    (await readdir(dest)).filter((name) => name.startsWith('.in-progress')),
    [],
  );
});
