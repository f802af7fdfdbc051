// Event-driven waits: Connection.waitFor() on the in-process test driver, and
// Domain.waitForJob() on the real daemon when the job's events never arrive.
import type { EventEmitter } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import test from 'ava';

import { connect, Connection, type Domain, DomainEventID, JobFailedError, JobOperation, JobType, LibvirtError, LifecycleEvent } from '../../src/index.js';
import { connectSystem, createThrowawayDomain, IMAGE_DIR, SYSTEM_URI, type ThrowawayDomain } from '../helpers/daemon.js';
import { openNativeWith } from '../helpers/native-wrapper.js';

/** A running domain of its own on test:///default (shared by every connection of the process). */
async function ownTestDomain(conn: Connection, label: string): Promise<Domain> {
  const name = `lvb-wait-${label}-${process.pid}`;
  const domain = await conn.defineDomain(`<domain type='test'><name>${name}</name><memory>65536</memory><os><type>hvm</type></os></domain>`);
  await domain.start();
  return domain;
}

async function testConnection(t: { teardown(fn: () => unknown): void }): Promise<Connection> {
  const conn = await connect('test:///default');
  t.teardown(() => conn.close());
  return conn;
}

/** A connection whose registration of `eventId` libvirt refuses, as a driver without that event does. */
async function connectionRefusing(uri: string, eventId: DomainEventID): Promise<Connection> {
  const native = await openNativeWith(uri, {});
  const register = native.registerDomainEvent;
  native.registerDomainEvent = (id) => {
    if (id !== eventId) return register(id);
    const info = { code: 3, domain: 0, level: 2, message: 'this driver does not support that event', str1: null, str2: null, str3: null, int1: 0, int2: 0 };
    return Promise.reject(new LibvirtError(info));
  };
  return new Connection(native);
}

test('waitFor() resolves with what match returns for the first event it accepts, and removes its listener', async (t) => {
  const conn = await testConnection(t);
  const domain = await ownTestDomain(conn, 'match');
  t.teardown(() => domain.undefine().catch(() => undefined));
  const stopped = conn.waitFor('lifecycle', {
    match: (d, payload) => d.uuid === domain.uuid && payload.event === LifecycleEvent.STOPPED && payload,
    timeoutMs: 30_000,
  });
  t.is(conn.listenerCount('lifecycle'), 1);
  await conn.eventsReady('lifecycle');
  await domain.destroy();
  t.is((await stopped).event, LifecycleEvent.STOPPED);
  t.is(conn.listenerCount('lifecycle'), 0);
});

test('waitFor() asks check only once the registration is in place: an event sent while check runs is not missed', async (t) => {
  const conn = await testConnection(t);
  const domain = await ownTestDomain(conn, 'check');
  t.teardown(() => domain.undefine().catch(() => undefined));
  let checks = 0;
  const payload = await conn.waitFor('lifecycle', {
    match: (d, p) => d.uuid === domain.uuid && p.event === LifecycleEvent.STOPPED && p,
    check: async () => {
      checks++;
      // The condition was false when asked; the event libvirt sends right after must still end the wait.
      await domain.destroy();
      return undefined;
    },
    timeoutMs: 30_000,
  });
  t.is(payload.event, LifecycleEvent.STOPPED);
  t.is(checks, 1);
  t.is(conn.listenerCount('lifecycle'), 0);
});

test('waitFor() ends without an event when check answers', async (t) => {
  const conn = await testConnection(t);
  const answer = await conn.waitFor('reboot', { match: () => false, check: () => 'already there' });
  t.is(answer, 'already there');
  t.is(conn.listenerCount('reboot'), 0);
});

test('waitFor() rejects with the signal reason on abort, before or during the wait, and removes its listener', async (t) => {
  const conn = await testConnection(t);
  const controller = new AbortController();
  const waiting = conn.waitFor('reboot', { match: () => true, signal: controller.signal });
  await conn.eventsReady('reboot');
  const reason = new Error('operator pressed Ctrl-C');
  controller.abort(reason);
  t.is(await t.throwsAsync(waiting), reason);
  t.is(conn.listenerCount('reboot'), 0);
  // Already aborted: no listener is ever added.
  let added = 0;
  (conn as EventEmitter).on('newListener', () => added++);
  t.is(await t.throwsAsync(conn.waitFor('reboot', { match: () => true, signal: controller.signal })), reason);
  t.is(added, 0);
});

test('waitFor() rejects with a TimeoutError naming what it waited for, and removes its listener', async (t) => {
  const conn = await testConnection(t);
  const error = await t.throwsAsync(conn.waitFor('block-job', { match: () => true, timeoutMs: 50, description: 'the mirror to be ready' }));
  t.is(error?.name, 'TimeoutError');
  t.is(error?.message, 'timed out after 50 ms waiting for the mirror to be ready');
  t.is(conn.listenerCount('block-job'), 0);
});

test('waitFor() rejects with what match or check throws, and removes its listener', async (t) => {
  const conn = await testConnection(t);
  const domain = await ownTestDomain(conn, 'throws');
  t.teardown(() => domain.undefine().catch(() => undefined));
  const broken = new Error('match failed');
  const waiting = conn.waitFor('lifecycle', {
    match: (d) => {
      if (d.uuid === domain.uuid) throw broken;
      return false;
    },
  });
  await conn.eventsReady('lifecycle');
  await domain.destroy();
  t.is(await t.throwsAsync(waiting), broken);
  t.is(conn.listenerCount('lifecycle'), 0);
  const checkFailure = new Error('check failed');
  const checked = conn.waitFor('reboot', {
    match: () => false,
    check: () => {
      throw checkFailure;
    },
  });
  t.is(await t.throwsAsync(checked), checkFailure);
  t.is(conn.listenerCount('reboot'), 0);
});

test('waitFor() rejects with the refusal of its registration, unless recheckMs lets check carry the wait', async (t) => {
  const conn = await connectionRefusing('test:///default', DomainEventID.REBOOT);
  t.teardown(() => conn.close());
  const refusals: string[] = [];
  conn.on('registration-error', (error, kind) => refusals.push(`${kind}: ${error.message}`));
  await t.throwsAsync(conn.waitFor('reboot', { match: () => true }), { instanceOf: LibvirtError, message: /does not support that event/ });
  t.is(conn.listenerCount('reboot'), 0);
  let checks = 0;
  const answer = await conn.waitFor('reboot', { match: () => 'event', check: () => ++checks === 3 && 'checked', recheckMs: 10 });
  t.is(answer, 'checked');
  t.is(checks, 3);
  t.is(conn.listenerCount('reboot'), 0);
  t.deepEqual(refusals, ['reboot: this driver does not support that event', 'reboot: this driver does not support that event']);
});

test('waitFor() rejects bad options with a TypeError naming the option', async (t) => {
  const conn = await testConnection(t);
  const bad: Array<[unknown, RegExp]> = [
    [undefined, /options\.match must be a function/],
    [{ match: 'yes' }, /options\.match must be a function/],
    [{ match: () => true, check: 1 }, /options\.check must be a function/],
    [{ match: () => true, timeoutMs: -1 }, /options\.timeoutMs must be a number of milliseconds from 0 to 2147483647, got -1/],
    [{ match: () => true, timeoutMs: 2 ** 31 }, /options\.timeoutMs must be .* got 2147483648/],
    [{ match: () => true, check: () => true, recheckMs: 0 }, /options\.recheckMs must be a number of milliseconds from 1/],
    [{ match: () => true, recheckMs: 100 }, /options\.recheckMs needs options\.check/],
  ];
  for (const [options, message] of bad) {
    await t.throwsAsync(conn.waitFor('lifecycle', options as never), { instanceOf: TypeError, message });
  }
  t.is(conn.listenerCount('lifecycle'), 0);
});

/** Starts a pull backup of vda: a job that runs until it is aborted or the domain stops. */
async function startPullJob(t: { teardown(fn: () => unknown): void }, domain: Domain, vm: ThrowawayDomain): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'lvb-wait-'));
  const scratch = join(IMAGE_DIR, `${vm.name}-scratch.qcow2`);
  t.teardown(async () => {
    await domain.abortJob().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
    await rm(scratch, { force: true });
  });
  await domain.backupBegin({
    mode: 'pull',
    server: { transport: 'unix', socket: join(dir, 'nbd.sock') },
    disks: [{ name: 'vda', backup: 'yes', type: 'file', scratch: { file: scratch } }],
  });
}

async function runningDomain(t: { teardown(fn: () => unknown): void }, conn: Connection, label: string): Promise<ThrowawayDomain> {
  const vm = await createThrowawayDomain(conn, label, [{ sizeMiB: 8 }]);
  t.teardown(() => vm.cleanup());
  return vm;
}

test('waitForJob() answers a job that ended while its events were not delivered (registration removed)', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const vm = await runningDomain(t, conn, 'wait-lost');
  await startPullJob(t, vm.domain, vm);
  const ended = vm.domain.waitForJob({ recheckMs: 200, timeoutMs: 60_000 });
  await conn.eventsReady('job-completed');
  // Removing every listener removes libvirt's registration: the job's end is never delivered.
  conn.removeAllListeners('job-completed');
  await conn.eventsReady();
  await vm.domain.abortJob();
  const stats = await ended;
  t.is(stats.operation, JobOperation.BACKUP);
  t.is(stats.type, JobType.COMPLETED);
  t.is(conn.listenerCount('job-completed'), 0);
});

test('waitForJob() answers a job whose domain stopped while its events were not delivered', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const vm = await runningDomain(t, conn, 'wait-stop');
  await startPullJob(t, vm.domain, vm);
  const ended = vm.domain.waitForJob({ recheckMs: 200, timeoutMs: 60_000 });
  await conn.eventsReady('job-completed');
  conn.removeAllListeners('job-completed');
  await conn.eventsReady();
  await vm.domain.destroy();
  const error = await t.throwsAsync(ended, { instanceOf: JobFailedError });
  t.is(error?.stats.success, false);
  t.regex(error?.message ?? '', new RegExp(`backup job on domain ${vm.name}`));
});

test('waitForJob() carries on through the job state when libvirt refuses the job-completed registration', async (t) => {
  const system = await connectSystem();
  t.teardown(() => system.close());
  const vm = await runningDomain(t, system, 'wait-refused');
  const conn = await connectionRefusing(SYSTEM_URI, DomainEventID.JOB_COMPLETED);
  t.teardown(() => conn.close());
  const refusals: string[] = [];
  conn.on('registration-error', (_error, kind) => refusals.push(kind));
  const domain = await conn.lookupDomainByName(vm.name);
  await startPullJob(t, domain, vm);
  const ended = domain.waitForJob({ recheckMs: 200, timeoutMs: 60_000 });
  await t.throwsAsync(conn.eventsReady('job-completed'), { message: /does not support that event/ });
  await domain.abortJob();
  const stats = await ended;
  t.is(stats.operation, JobOperation.BACKUP);
  t.deepEqual(refusals, ['job-completed']);
  t.is(conn.listenerCount('job-completed'), 0);
});
