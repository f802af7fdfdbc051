// Push and pull backups against the real daemon; results checked with qemu-img,
// qemu-io and nbdinfo.
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import test from 'ava';

import { BlockJobStatus, JobOperation, JobStatsFlags, JobType, LibvirtError } from '../../src/index.js';
import type { BackupSpec, CheckpointSpec } from '../../src/xml/index.js';
import { connectSystem, createThrowawayDomain, guestWrite, IMAGE_DIR, uniqueName } from '../helpers/daemon.js';
import { recordEvents } from '../helpers/events.js';
import { run, tryRun } from '../helpers/process.js';

const twoDisks = [{ sizeMiB: 16 }, { sizeMiB: 16 }];
const checkpointSpec = (name: string): CheckpointSpec => ({
  name,
  disks: [
    { name: 'vda', checkpoint: 'bitmap' },
    { name: 'vdb', checkpoint: 'no' },
  ],
});
const pushSpec = (target: string, incremental?: string): BackupSpec => ({
  mode: 'push',
  ...(incremental !== undefined ? { incremental } : {}),
  disks: [
    { name: 'vda', backup: 'yes', type: 'file', target: { file: target }, driver: { type: 'qcow2' } },
    { name: 'vdb', backup: 'no' },
  ],
});

async function ownDataRanges(image: string): Promise<Array<[number, number]>> {
  const map = JSON.parse(await run('qemu-img', ['map', '-U', '--output=json', image])) as Array<{
    start: number;
    length: number;
    data: boolean;
    depth: number;
  }>;
  return map.filter((e) => e.depth === 0 && e.data).map((e) => [e.start, e.length]);
}

test('push full, then push incremental with a new checkpoint: events and exact ranges', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const vm = await createThrowawayDomain(conn, 'push', twoDisks);
  const full = join(IMAGE_DIR, `${vm.name}-full.qcow2`);
  const inc = join(IMAGE_DIR, `${vm.name}-inc.qcow2`);
  t.teardown(async () => {
    await vm.cleanup();
    await rm(full, { force: true });
    await rm(inc, { force: true });
  });
  await guestWrite(vm.domain, 0, 0x11, 0, '256k');
  const events = recordEvents(conn, vm.domain);
  t.teardown(events.stop);
  await conn.eventsReady();

  await vm.domain.backupBegin(pushSpec(full), checkpointSpec('full'));
  const fullStats = await vm.domain.waitForJob({ timeoutMs: 60_000 });
  t.true(fullStats.success);
  t.is(fullStats.operation, JobOperation.BACKUP);
  t.is(fullStats.diskTotal, 16 * 2 ** 20);
  t.is(await events.blockJobsEnded('vda', BlockJobStatus.COMPLETED, 1), 1);
  await run('qemu-io', ['-r', '-f', 'qcow2', '-c', 'read -P 0x11 0 256k', full]);

  await guestWrite(vm.domain, 0, 0xab, '1M', '128k');
  await guestWrite(vm.domain, 0, 0xcd, '4M', '64k');
  await vm.domain.backupBegin(pushSpec(inc, 'full'), checkpointSpec('inc'));
  const incStats = await vm.domain.waitForJob({ timeoutMs: 60_000 });
  t.true(incStats.success);
  t.is(await events.blockJobsEnded('vda', BlockJobStatus.COMPLETED, 2), 2);

  // The event arrived for both jobs, with success.
  t.is(events.jobs.length, 2);
  t.true(events.jobs.every((s) => s.success === true && s.operation === JobOperation.BACKUP));
  // The incremental holds exactly the written ranges, with the written bytes.
  t.deepEqual(await ownDataRanges(inc), [
    [2 ** 20, 131072],
    [4 * 2 ** 20, 65536],
  ]);
  // -U: libvirt made the live disk the incremental's backing file, and QEMU holds it.
  await run('qemu-io', ['-U', '-r', '-f', 'qcow2', '-c', 'read -P 0xab 1M 128k', '-c', 'read -P 0xcd 4M 64k', inc]);
  const completed = await vm.domain.getJobStats(JobStatsFlags.COMPLETED);
  t.is(completed.type, JobType.COMPLETED);
  t.deepEqual((await vm.domain.listAllCheckpoints()).map((c) => c.name).sort(), ['full', 'inc']);
});

test('pull backup over a unix socket: export, dirty map, abort and its event', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const vm = await createThrowawayDomain(conn, 'pull', twoDisks);
  const dir = await mkdtemp(join(tmpdir(), 'lvb-pull-'));
  const socket = join(dir, 'nbd.sock');
  const scratch = join(IMAGE_DIR, `${vm.name}-scratch.qcow2`);
  t.teardown(async () => {
    await vm.domain.abortJob().catch(() => undefined);
    await vm.cleanup();
    await rm(dir, { recursive: true, force: true });
    await rm(scratch, { force: true });
  });
  await vm.domain.createCheckpoint(checkpointSpec('base'));
  await guestWrite(vm.domain, 0, 0xab, '1M', '128k');
  await guestWrite(vm.domain, 0, 0xcd, '8M', '64k');
  const events = recordEvents(conn, vm.domain);
  t.teardown(events.stop);
  await conn.eventsReady();

  await vm.domain.backupBegin(
    {
      mode: 'pull',
      incremental: 'base',
      server: { transport: 'unix', socket },
      disks: [
        { name: 'vda', backup: 'yes', type: 'file', scratch: { file: scratch } },
        { name: 'vdb', backup: 'no' },
      ],
    },
    checkpointSpec('next'),
  );
  const spec = await vm.domain.backupGetSpec();
  t.is(spec.mode, 'pull');
  if (spec.mode !== 'pull') return;
  t.deepEqual(spec.server, { transport: 'unix', socket });
  const vda = spec.disks?.find((d) => d.name === 'vda');
  t.is(vda?.exportname, 'vda');
  t.is(vda?.exportbitmap, 'backup-vda');
  t.is(vda?.backupmode, 'incremental');
  t.is((await vm.domain.getJobInfo()).type, JobType.UNBOUNDED);

  const map = await run('nbdinfo', [`--map=qemu:dirty-bitmap:backup-vda`, '--json', `nbd+unix:///vda?socket=${socket}`]);
  const dirty = (JSON.parse(map) as Array<{ offset: number; length: number; type: number }>).filter((e) => e.type & 1).map((e) => [e.offset, e.length]);
  t.deepEqual(dirty, [
    [2 ** 20, 131072],
    [8 * 2 ** 20, 65536],
  ]);

  const finished = vm.domain.waitForJob({ timeoutMs: 60_000 });
  await vm.domain.abortJob();
  const stats = await finished;
  // Ending a pull backup is what abort is for: libvirt reports it as completed.
  t.is(stats.operation, JobOperation.BACKUP);
  t.is(events.jobs.length, 1);
  t.is(await events.blockJobsEnded('vda', BlockJobStatus.CANCELED, 1), 1, JSON.stringify(events.blockJobs));
  t.is((await vm.domain.getJobInfo()).type, JobType.NONE);
  t.false(existsSync(socket));
  t.false(existsSync(scratch), 'libvirt removes the scratch file it created');
});

test('failed backup starts reject with libvirt codes and leave no job or file behind', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const vm = await createThrowawayDomain(conn, 'bkerr', twoDisks);
  const target = join(IMAGE_DIR, `${uniqueName('bkerr-target')}.qcow2`);
  const dir = await mkdtemp(join(tmpdir(), 'lvb-bkerr-'));
  t.teardown(async () => {
    await vm.domain.abortJob().catch(() => undefined);
    await vm.cleanup();
    await rm(target, { force: true });
    await rm(dir, { recursive: true, force: true });
  });

  const missing = await t.throwsAsync(vm.domain.backupBegin(pushSpec(target, 'no-such-checkpoint')), { instanceOf: LibvirtError });
  t.is(missing?.codeName, 'VIR_ERR_NO_DOMAIN_CHECKPOINT');
  t.is((await vm.domain.getJobInfo()).type, JobType.NONE);
  t.false(existsSync(target));

  // A pull job holds the domain's job until aborted; a second backup is refused.
  const scratch = join(IMAGE_DIR, `${vm.name}-scratch.qcow2`);
  t.teardown(() => rm(scratch, { force: true }));
  await vm.domain.backupBegin({
    mode: 'pull',
    server: { transport: 'unix', socket: join(dir, 'a.sock') },
    disks: [
      { name: 'vda', backup: 'yes', type: 'file', scratch: { file: scratch } },
      { name: 'vdb', backup: 'no' },
    ],
  });
  const second = await t.throwsAsync(vm.domain.backupBegin(pushSpec(target)), { instanceOf: LibvirtError });
  t.truthy(second?.codeName);
  t.regex(second?.message ?? '', /job|lock/i);
  t.false(existsSync(target));
  // abortJob() asks; the job is gone once its completion event arrived.
  const ended = vm.domain.waitForJob({ timeoutMs: 60_000 });
  await vm.domain.abortJob();
  await ended;
  t.is((await vm.domain.getJobInfo()).type, JobType.NONE);
  t.deepEqual(await vm.domain.listAllCheckpoints(), []);
  const leftovers = await tryRun('sh', ['-c', `ls ${IMAGE_DIR} | grep -c ${vm.name}`]);
  t.is(leftovers.stdout.trim(), String(vm.disks.length));
});
