// libvirtd gone in the middle of a run (a crash, a restart), made by having the daemon
// drop the run's connection: what libvirt then says about its broken socket must never
// pass for an answer to a check, and the files QEMU may still be writing must never be
// deleted under it.
import { mkdir, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import test from 'ava';

import { BackupError, BackupSet, restore } from '../../src/backup/index.js';
import { runBackup } from '../../src/backup/engine/engine.js';
import { DomainLock } from '../../src/backup/engine/domain-lock.js';
import { ensureRunDir } from '../../src/backup/engine/run-dir.js';
import { JOURNAL_FILE } from '../../src/backup/set/run-journal.js';
import { type Domain, JobType } from '../../src/index.js';
import { reportFor } from '../../src/cli/error-report.js';
import { connectSystem } from '../helpers/daemon.js';
import { droppableConnection } from '../helpers/libvirt-admin.js';
import { run } from '../helpers/process.js';
import { imagesIdentical, mirroredDomain } from './engine-helpers.js';

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

/** QMP through libvirt-qemu, as the test stands in for what libvirt lost. */
async function qmp(domain: Domain, execute: string, args?: Record<string, unknown>): Promise<unknown> {
  const reply = JSON.parse(await domain.qemuMonitorCommand(JSON.stringify(args === undefined ? { execute } : { execute, arguments: args }))) as {
    return?: unknown;
    error?: { desc: string };
  };
  if (reply.error !== undefined) throw new Error(`${execute}: ${reply.error.desc}`);
  return reply.return;
}

interface QemuNode {
  'node-name': string;
  file: string;
  'dirty-bitmaps'?: { name?: string }[];
}

// libvirt 9.0 restarted at the wrong moment of a push job forgets the job while QEMU's
// block job goes on: that state is made here by ending libvirt's job and starting, behind
// libvirt's back, the block job libvirt would have run (same node and job names, the
// `backup-vda` bitmap an incremental works from, the run's own target file).
for (const owner of ['the interrupted run', 'someone else'] as const) {
  test.serial(
    `a push job libvirt forgot while QEMU still runs it, writing a file of ${owner}: ${owner === 'someone else' ? 'left alone, and the run refused' : 'ended through QEMU before its target is removed; the next push works'}`,
    async (t) => {
      const conn = await connectSystem();
      t.teardown(() => conn.close());
      const m = await mirroredDomain(t, conn, 'lost-forgot', [{ sizeMiB: 32 }]);
      const dest = join(m.dir, 'set');
      await m.write(0, 0x71, '0', '8M');
      await runBackup({ domain: m.vm.name, dest, connection: conn, transport: 'push' });
      const manifest = await readFile(join(dest, 'manifest.json'));
      await m.write(0, 0x72, '4M', '2M');

      const victim = await droppableConnection();
      t.teardown(() => victim.conn.close());
      const error = await t.throwsAsync(
        runBackup({ domain: m.vm.name, dest, transport: 'push', connection: victim.conn, hooks: { afterJobStart: () => victim.drop() } }),
      );
      t.is((error as { code?: string }).code, 'DAEMON_LOST', error?.message);
      const journal = JSON.parse(await readFile(join(dest, JOURNAL_FILE), 'utf8')) as { creates: string[] };
      const target = owner === 'someone else' ? join(m.dir, 'elsewhere.qcow2') : join(dest, journal.creates[0]!);

      const domain = m.vm.domain;
      await domain.abortJob().catch(() => undefined);
      await domain.waitForJob({ timeoutMs: 60_000 }).catch(() => undefined);
      t.is((await domain.getJobInfo()).type, JobType.NONE, 'libvirt knows no job');
      await run('qemu-img', ['create', '-q', '-f', 'qcow2', target, '32M']);
      const nodes = (await qmp(domain, 'query-named-block-nodes', { flat: true })) as QemuNode[];
      const source = nodes.find((node) => node.file === m.vm.disks[0]!.path && /-format$/.test(node['node-name']))!;
      t.truthy(source, `the disk's format node among ${nodes.map((node) => node['node-name']).join(', ')}`);
      await qmp(domain, 'blockdev-add', { driver: 'file', filename: target, 'node-name': 'libvirt-900-storage' });
      await qmp(domain, 'blockdev-add', { driver: 'qcow2', file: 'libvirt-900-storage', 'node-name': 'libvirt-900-format' });
      await qmp(domain, 'block-dirty-bitmap-add', { node: source['node-name'], name: 'backup-vda' });
      await qmp(domain, 'blockdev-backup', {
        'job-id': 'backup-vda-libvirt-900-format',
        device: source['node-name'],
        target: 'libvirt-900-format',
        sync: 'full',
        speed: 64 * 1024,
        'auto-dismiss': false,
      });

      if (owner === 'someone else') {
        const refused = await t.throwsAsync(runBackup({ domain: m.vm.name, dest, connection: conn, transport: 'push' }));
        t.is((refused as { code?: string }).code, 'DOMAIN_BUSY', refused?.message);
        t.regex(
          refused!.message,
          /QEMU runs a backup job \(backup-vda-libvirt-900-format, writing .*elsewhere\.qcow2\) .* that no interrupted run of libvirt-backup started/,
        );
        t.is(((await qmp(domain, 'query-jobs')) as unknown[]).length, 1, 'the job is left alone');
        const kept = JSON.parse(await readFile(DomainLock.path(await ensureRunDir(), domain.uuid), 'utf8')) as { checkpoint?: string; transport: string };
        t.true(kept.transport === 'push' && kept.checkpoint !== undefined, "the interrupted run's record stays for the next run");
        t.deepEqual(await readFile(join(dest, 'manifest.json')), manifest);
        await qmp(domain, 'block-job-cancel', { device: 'backup-vda-libvirt-900-format', force: true });
        return;
      }
      const next = await runBackup({ domain: m.vm.name, dest, connection: conn, transport: 'push' });
      t.is(next.level, 'inc');
      t.true(
        next.notices.some((notice) =>
          /ended the push backup job that QEMU still ran and released the target \(.*vda\.0002\.inc\.qcow2\) .* tainted/.test(notice),
        ),
        next.notices.join('\n'),
      );
      t.deepEqual(await qmp(domain, 'query-jobs'), []);
      const after = (await qmp(domain, 'query-named-block-nodes', { flat: true })) as QemuNode[];
      t.false(
        after.some((node) => node['node-name'].startsWith('libvirt-900-')),
        'the nodes of the forgotten job are gone',
      );
      t.false(
        after.some((node) => (node['dirty-bitmaps'] ?? []).some((bitmap) => bitmap.name === 'backup-vda')),
        'no backup-vda bitmap is left',
      );
      t.notDeepEqual(await readFile(join(dest, 'manifest.json')), manifest);
      await m.snapshot('now');
      const out = join(m.dir, 'restore');
      await mkdir(out);
      const restored = await restore(await BackupSet.open(dest), { to: out, format: 'raw' });
      t.true(await imagesIdentical(restored.disks[0]!.path, 'raw', m.referenceAt('now', 0), 'raw'), 'the incremental equals the disk');
    },
  );
}
