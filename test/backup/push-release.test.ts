// A push run waits, after the job's end, for libvirt to say that it released each
// target file (its block-job event). When that never comes, the run must still end:
// at once when the operator stops it, as a job failure when libvirt keeps silent.
import type { EventEmitter } from 'node:events';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';

import test, { type ExecutionContext } from 'ava';

import { BackupSet } from '../../src/backup/index.js';
import { runBackup } from '../../src/backup/engine/engine.js';
import { TARGET_RELEASE_TIMEOUT } from '../../src/backup/engine/push-transfer.js';
import { Connection, type Domain, DomainEventID, JobType } from '../../src/index.js';
import { connectSystem, SYSTEM_URI } from '../helpers/daemon.js';
import { openNativeWith } from '../helpers/native-wrapper.js';
import { mirroredDomain } from './engine-helpers.js';

/** A connection to the real daemon on which libvirt's block-job events never arrive (their registration is never made). */
async function connectionWithoutBlockJobEvents(t: ExecutionContext): Promise<Connection> {
  const native = await openNativeWith(SYSTEM_URI, {});
  const register = native.registerDomainEvent;
  const deregister = native.deregisterDomainEvent;
  const silent = -1;
  native.registerDomainEvent = async (id) => (id === DomainEventID.BLOCK_JOB_2 ? silent : register(id));
  native.deregisterDomainEvent = async (callbackId) => (callbackId === silent ? undefined : deregister(callbackId));
  const conn = new Connection(native);
  t.teardown(() => conn.close());
  return conn;
}

async function pushSetup(t: ExecutionContext, label: string) {
  const system = await connectSystem();
  t.teardown(() => system.close());
  const m = await mirroredDomain(t, system, label, [{ sizeMiB: 16 }]);
  await m.write(0, 0x61, '0', '1M');
  return { m, dest: join(m.dir, 'set'), conn: await connectionWithoutBlockJobEvents(t) };
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

// Serial: the tests set the module's time limit each their own way.
test.serial('an abort while libvirt has not released the push targets ends the run as ABORTED', async (t) => {
  TARGET_RELEASE_TIMEOUT.ms = 60_000;
  const { m, dest, conn } = await pushSetup(t, 'push-rel-abort');
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
  const { m, dest, conn } = await pushSetup(t, 'push-rel-timeout');
  const error = await t.throwsAsync(runBackup({ domain: m.vm.name, dest, connection: conn, transport: 'push' }));
  t.is((error as { code?: string }).code, 'JOB_FAILED', error?.message);
  t.regex(error!.message, /^the backup job on \S+ ended, but libvirt did not release the backup target of vda within 0\.5 s/);
  await assertNothingKept(t, m.vm.domain, dest);
});
