// A push run waits, after the job's end, for libvirt to release each target file: its
// block-job event says so, and so does libvirt no longer listing the disk's block job.
// When neither ever comes, the run must still end: at once when the operator stops it,
// as a job failure when libvirt keeps holding the target.
import type { EventEmitter } from 'node:events';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import test, { type ExecutionContext } from 'ava';

import { BackupSet, restore } from '../../src/backup/index.js';
import { runBackup } from '../../src/backup/engine/engine.js';
import { TARGET_RELEASE_TIMEOUT } from '../../src/backup/engine/push-transfer.js';
import { BlockJobType, Connection, type Domain, DomainEventID, JobType } from '../../src/index.js';
import type { NativeDomain } from '../../src/libvirt/native.js';
import { connectSystem, SYSTEM_URI } from '../helpers/daemon.js';
import { openNativeWith } from '../helpers/native-wrapper.js';
import { imagesIdentical, mirroredDomain } from './engine-helpers.js';

/**
 * A connection to the real daemon whose block-job events are changed: `'never'` (their
 * registration is never made) or registered `{ lateMs }` late. With `targetsHeld`,
 * libvirt also seems to keep a backup block job on every disk for good, so that only
 * the events can tell the run that the targets are released.
 */
async function connectionWith(t: ExecutionContext, blockJobEvents: 'never' | { lateMs: number }, targetsHeld: boolean): Promise<Connection> {
  const forever: Partial<NativeDomain> = {
    getBlockJobInfo: async () => ({ type: BlockJobType.BACKUP, bandwidth: 0, cur: 0, end: 1 }),
  };
  const native = await openNativeWith(SYSTEM_URI, {}, targetsHeld ? forever : {});
  const register = native.registerDomainEvent;
  if (blockJobEvents === 'never') {
    const deregister = native.deregisterDomainEvent;
    const silent = -1;
    native.registerDomainEvent = async (id) => (id === DomainEventID.BLOCK_JOB_2 ? silent : register(id));
    native.deregisterDomainEvent = async (callbackId) => (callbackId === silent ? undefined : deregister(callbackId));
  } else {
    native.registerDomainEvent = async (id) => {
      if (id === DomainEventID.BLOCK_JOB_2) await sleep(blockJobEvents.lateMs);
      return register(id);
    };
  }
  const conn = new Connection(native);
  t.teardown(() => conn.close());
  return conn;
}

async function pushSetup(t: ExecutionContext, label: string, blockJobEvents: 'never' | { lateMs: number }, targetsHeld: boolean) {
  const system = await connectSystem();
  t.teardown(() => system.close());
  const m = await mirroredDomain(t, system, label, [{ sizeMiB: 16 }]);
  await m.write(0, 0x61, '0', '1M');
  return { m, dest: join(m.dir, 'set'), conn: await connectionWith(t, blockJobEvents, targetsHeld) };
}

/** The run left nothing: no job, no checkpoint, no backup file, no backup in the manifest. */
async function assertNothingKept(t: ExecutionContext, domain: Domain, dest: string): Promise<void> {
  t.is((await domain.getJobInfo()).type, JobType.NONE);
  t.deepEqual(await domain.listAllCheckpoints(), []);
  t.deepEqual(
    (await readdir(dest)).filter((f) => f.endsWith('.qcow2')),
    [],
  );
  t.deepEqual((await BackupSet.open(dest)).backups, []);
}

test.serial('without any block-job event, the run learns from libvirt that it released the targets, and completes', async (t) => {
  TARGET_RELEASE_TIMEOUT.ms = 60_000;
  const { m, dest, conn } = await pushSetup(t, 'push-rel-query', 'never', false);
  let blockJobEvents = 0;
  conn.on('block-job', () => blockJobEvents++);
  const started = Date.now();
  const result = await runBackup({ domain: m.vm.name, dest, connection: conn, transport: 'push' });
  const elapsed = Date.now() - started;
  t.log(`completed in ${elapsed} ms`);
  t.is(blockJobEvents, 0, 'no block-job event reached the run');
  t.true(elapsed < TARGET_RELEASE_TIMEOUT.ms / 2, `asking libvirt ended the wait (${elapsed} ms), not its time limit`);
  t.is(result.level, 'full');
  await m.snapshot('full');
  const out = join(m.dir, 'restore');
  await mkdir(out);
  const restored = await restore(await BackupSet.open(dest), { to: out, format: 'raw' });
  t.true(await imagesIdentical(restored.disks[0]!.path, 'raw', m.referenceAt('full', 0), 'raw'), 'the backup equals the disk');
});

test.serial("the run's block-job registration is in place before the job starts, however long libvirt takes to make it", async (t) => {
  TARGET_RELEASE_TIMEOUT.ms = 10_000;
  t.teardown(() => (TARGET_RELEASE_TIMEOUT.ms = 60_000));
  // A push of 1 MiB ends in far less time than the registration takes here.
  const { m, dest, conn } = await pushSetup(t, 'push-rel-late', { lateMs: 4_000 }, true);
  const result = await runBackup({ domain: m.vm.name, dest, connection: conn, transport: 'push' });
  t.is(result.level, 'full');
  t.is((await BackupSet.open(dest)).backups.length, 1);
});

// Serial: the tests set the module's time limit each their own way.
test.serial('an abort while libvirt has not released the push targets ends the run as ABORTED', async (t) => {
  TARGET_RELEASE_TIMEOUT.ms = 60_000;
  const { m, dest, conn } = await pushSetup(t, 'push-rel-abort', 'never', true);
  const controller = new AbortController();
  let jobEnded = false;
  conn.on('job-completed', (domain) => (jobEnded ||= domain.uuid === m.vm.domain.uuid));
  // The only block-job listener added after the job's end is the wait for the targets: abort while it waits.
  (conn as EventEmitter).on('newListener', (name) => {
    if (name === 'block-job' && jobEnded) setImmediate(() => controller.abort(new Error('stopped by the operator')));
  });
  const started = Date.now();
  const error = await t.throwsAsync(runBackup({ domain: m.vm.name, dest, connection: conn, transport: 'push', signal: controller.signal }));
  const elapsed = Date.now() - started;
  t.log(`ended ${elapsed} ms after the start, the time limit being ${TARGET_RELEASE_TIMEOUT.ms} ms`);
  t.true(controller.signal.aborted, 'the abort came while the run waited for the targets');
  t.true(elapsed < TARGET_RELEASE_TIMEOUT.ms, 'the abort ended the wait, not its time limit');
  t.is((error as { code?: string }).code, 'ABORTED', error?.message);
  await assertNothingKept(t, m.vm.domain, dest);
});

test.serial('libvirt never saying that it released the push targets is a job failure naming what it did not do', async (t) => {
  TARGET_RELEASE_TIMEOUT.ms = 500;
  t.teardown(() => (TARGET_RELEASE_TIMEOUT.ms = 60_000));
  const { m, dest, conn } = await pushSetup(t, 'push-rel-timeout', 'never', true);
  const error = await t.throwsAsync(runBackup({ domain: m.vm.name, dest, connection: conn, transport: 'push' }));
  t.is((error as { code?: string }).code, 'JOB_FAILED', error?.message);
  t.regex(
    error!.message,
    /^the backup job on \S+ ended, but libvirt did not release the backup target of vda within 0\.5 s .*libvirt still listed the block job/,
  );
  await assertNothingKept(t, m.vm.domain, dest);
});
