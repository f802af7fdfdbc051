import { spawn } from 'node:child_process';
import { EventEmitter, on, once } from 'node:events';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';

import test from 'ava';

import { BlockJobType, connect, Connection, type Domain, DomainEventID, LibvirtError, LifecycleEvent, type LifecyclePayload } from '../../src/index.js';
import { connectSystem, createThrowawayDomain, IMAGE_DIR } from '../helpers/daemon.js';
import { openNativeWith } from '../helpers/native-wrapper.js';
import { toolEnvironment } from '../helpers/process.js';

test('200 lifecycle events from start/destroy cycles reach JS in order', async (t) => {
  const conn = await connect('test:///default');
  t.teardown(() => conn.close());
  const name = `lvb-events-${process.pid}`;
  const domain = await conn.defineDomain(`<domain type='test'><name>${name}</name><memory>65536</memory><os><type>hvm</type></os></domain>`);
  t.teardown(() => domain.undefine().catch(() => undefined));
  const seen: LifecycleEvent[] = [];
  const listener = (d: Domain, payload: LifecyclePayload) => {
    if (d.name === name && (payload.event === LifecycleEvent.STARTED || payload.event === LifecycleEvent.STOPPED)) {
      seen.push(payload.event);
    }
  };
  conn.on('lifecycle', listener);
  await conn.eventsReady();
  for (let i = 0; i < 100; i++) {
    await domain.start();
    await domain.destroy();
  }
  // listener was added first: it has recorded each event when this one looks.
  const all = () => seen.length >= 200;
  await conn.waitFor('lifecycle', { match: all, check: all, timeoutMs: 10_000 }).catch(() => undefined);
  conn.off('lifecycle', listener);
  t.is(seen.length, 200);
  const expected = Array.from({ length: 200 }, (_, i) => (i % 2 === 0 ? LifecycleEvent.STARTED : LifecycleEvent.STOPPED));
  t.deepEqual(seen, expected);
});

test('200 lifecycle events from start/destroy cycles on the real daemon reach JS in order', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const vm = await createThrowawayDomain(conn, 'lifecycle', [{ sizeMiB: 8 }], { start: false });
  t.teardown(() => vm.cleanup());
  const seen: Array<[string, LifecycleEvent]> = [];
  conn.on('lifecycle', (d, payload) => {
    if (d.uuid === vm.domain.uuid) seen.push([d.name, payload.event]);
  });
  await conn.eventsReady();
  const cycles = 100;
  for (let i = 0; i < cycles; i++) {
    await vm.domain.start();
    await vm.domain.destroy();
  }
  const allStopped = () => seen.filter(([, e]) => e === LifecycleEvent.STOPPED).length >= cycles;
  await conn.waitFor('lifecycle', { match: allStopped, check: allStopped, timeoutMs: 10_000 }).catch(() => undefined);
  const startsAndStops = seen.filter(([, e]) => e === LifecycleEvent.STARTED || e === LifecycleEvent.STOPPED);
  const { STARTED, STOPPED } = LifecycleEvent;
  t.is(startsAndStops.length, 2 * cycles);
  t.deepEqual(
    startsAndStops.map(([, e]) => e),
    Array.from({ length: 2 * cycles }, (_, i) => (i % 2 === 0 ? STARTED : STOPPED)),
  );
  t.true(seen.every(([n]) => n === vm.name));
});

test('once() fires a single time and listener bookkeeping is exact', async (t) => {
  const conn = await connect('test:///default');
  t.teardown(() => conn.close());
  let count = 0;
  conn.once('lifecycle', () => count++);
  t.is(conn.listenerCount('lifecycle'), 1);
  await conn.eventsReady();
  const name = `lvb-once-${process.pid}`;
  const domain = await conn.defineDomain(`<domain type='test'><name>${name}</name><memory>65536</memory><os><type>hvm</type></os></domain>`);
  // Its last event: once it is here, every earlier one has been delivered (events keep libvirt's order).
  const lastEvent = conn.waitFor('lifecycle', { match: (d, p) => d.uuid === domain.uuid && p.event === LifecycleEvent.UNDEFINED, timeoutMs: 10_000 });
  await conn.eventsReady('lifecycle');
  await domain.start();
  await domain.destroy();
  await domain.undefine();
  await lastEvent;
  t.is(count, 1);
  t.is(conn.listenerCount('lifecycle'), 0);
  t.throws(() => conn.on('nonsense' as 'lifecycle', () => undefined), { instanceOf: TypeError });
});

function runChild(source: string): Promise<{ code: number | null; ms: number; output: string }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(process.execPath, ['--import=tsx', '--input-type=module', '-e', source], {
      cwd: new URL('..', import.meta.url),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (c) => (output += c));
    child.stderr.on('data', (c) => (output += c));
    const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('exit', (code) => {
      clearTimeout(killer);
      resolve({ code, ms: Date.now() - started, output });
    });
  });
}

test('a process whose listener was removed exits by itself', async (t) => {
  const result = await runChild(`
    import { connect } from '../src/index.ts';
    const conn = await connect('qemu:///system');
    const listener = () => {};
    conn.on('lifecycle', listener).on('job-completed', listener).on('close', listener);
    await conn.eventsReady();
    conn.off('lifecycle', listener).off('job-completed', listener).off('close', listener);
    await conn.eventsReady();
    console.log('listeners removed; connection left open on purpose');
  `);
  t.is(result.code, 0, result.output);
  t.regex(result.output, /listeners removed/);
});

test('a process that only closes its connection exits by itself', async (t) => {
  const result = await runChild(`
    import { connect } from '../src/index.ts';
    const conn = await connect('qemu:///system');
    conn.on('lifecycle', () => {});
    await conn.eventsReady();
    await conn.close();
    console.log('closed');
  `);
  t.is(result.code, 0, result.output);
});

test('a connection nobody refers to any more still delivers to its listeners while they are registered', async (t) => {
  const name = `lvb-unreferenced-${process.pid}`;
  const seen: LifecycleEvent[] = [];
  let heard: () => void = () => undefined;
  const allHeard = new Promise<void>((resolve) => (heard = resolve));
  // Opened and dropped in a function of its own: only its registration can keep it.
  // The WeakRef is how the test closes it at the end; it keeps nothing alive.
  const listeningRef = await (async () => {
    const listening = await connect('test:///default');
    listening.on('lifecycle', (d: Domain, payload: LifecyclePayload) => {
      if (d.name !== name || (payload.event !== LifecycleEvent.STARTED && payload.event !== LifecycleEvent.STOPPED)) return;
      seen.push(payload.event);
      if (seen.length === 2) heard();
    });
    await listening.eventsReady();
    return new WeakRef(listening);
  })();
  t.teardown(() => listeningRef.deref()?.close());
  const gc = (globalThis as { gc?: () => void }).gc!;
  for (let round = 0; round < 3; round++) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
  const conn = await connect('test:///default');
  t.teardown(() => conn.close());
  const domain = await conn.defineDomain(`<domain type='test'><name>${name}</name><memory>65536</memory><os><type>hvm</type></os></domain>`);
  t.teardown(() => domain.undefine().catch(() => undefined));
  await domain.start();
  await domain.destroy();
  await Promise.race([allHeard, new Promise((resolve) => setTimeout(resolve, 10_000))]);
  t.deepEqual(seen, [LifecycleEvent.STARTED, LifecycleEvent.STOPPED]);
  t.truthy(listeningRef.deref(), 'its registration kept the connection');
});

/** A domain of its own on test:///default (shared by every connection of the process). */
async function ownTestDomain(conn: Connection, label: string): Promise<Domain> {
  const name = `lvb-${label}-${process.pid}`;
  const domain = await conn.defineDomain(`<domain type='test'><name>${name}</name><memory>65536</memory><os><type>hvm</type></os></domain>`);
  await domain.start();
  return domain;
}

// Serial: test:///default is shared by the process, and once() takes any domain's event.
test.serial('Connection is an EventEmitter: events.on() and events.once() work on it and clean up', async (t) => {
  const conn = await connect('test:///default');
  t.teardown(() => conn.close());
  t.true(conn instanceof EventEmitter);
  const domain = await ownTestDomain(conn, 'emitter');
  t.teardown(() => domain.destroy().then(() => domain.undefine()));
  const first = once(conn, 'lifecycle');
  const stream = on(conn, 'lifecycle');
  await conn.eventsReady('lifecycle');
  await domain.destroy();
  await domain.start();
  const [stoppedDomain, stopped] = (await first) as [Domain, LifecyclePayload];
  t.is(stoppedDomain.name, domain.name);
  t.is(stopped.event, LifecycleEvent.STOPPED);
  const seen: LifecycleEvent[] = [];
  for await (const [eventDomain, payload] of stream as AsyncIterableIterator<[Domain, LifecyclePayload]>) {
    if (eventDomain.uuid !== domain.uuid) continue;
    seen.push(payload.event);
    if (seen.length === 2) break; // ends the iterator: its listeners are removed
  }
  t.deepEqual(seen, [LifecycleEvent.STOPPED, LifecycleEvent.STARTED]);
  t.is(conn.listenerCount('lifecycle'), 0);
  t.is(conn.listenerCount('error'), 0);
  await t.notThrowsAsync(conn.eventsReady());
});

test('removeAllListeners() removes the registrations too, and listeners can be added again after', async (t) => {
  const conn = await connect('test:///default');
  t.teardown(() => conn.close());
  const domain = await ownTestDomain(conn, 'remove-all');
  t.teardown(() => domain.destroy().then(() => domain.undefine()));
  let count = 0;
  const countMine = (eventDomain: Domain) => eventDomain.uuid === domain.uuid && count++;
  conn.on('lifecycle', countMine).on('reboot', countMine);
  await conn.eventsReady();
  conn.removeAllListeners();
  await conn.eventsReady();
  await domain.destroy();
  await domain.start();
  // Deliberate: time for events to arrive, if the registrations had been left behind.
  await new Promise((resolve) => setTimeout(resolve, 100));
  t.is(count, 0);
  conn.on('lifecycle', countMine);
  await conn.eventsReady();
  await domain.destroy();
  await domain.start();
  const both = () => count >= 2;
  await conn.waitFor('lifecycle', { match: both, check: both, timeoutMs: 5_000 }).catch(() => undefined);
  t.is(count, 2);
});

/** A test:///default connection whose block-job registration libvirt refuses while `refuse.now`. */
async function connectionRefusingBlockJobs(refuse: { now: boolean }): Promise<Connection> {
  const native = await openNativeWith('test:///default', {});
  const register = native.registerDomainEvent;
  native.registerDomainEvent = (eventId) => {
    if (eventId === DomainEventID.BLOCK_JOB_2 && refuse.now) {
      return Promise.reject(
        new LibvirtError({
          code: 3,
          domain: 0,
          level: 2,
          message: 'this driver does not support block job events',
          str1: null,
          str2: null,
          str3: null,
          int1: 0,
          int2: 0,
        }),
      );
    }
    return register(eventId);
  };
  return new Connection(native);
}

test('a refused registration is a registration-error of its kind, and eventsReady() answers each caller', async (t) => {
  const refuse = { now: true };
  const conn = await connectionRefusingBlockJobs(refuse);
  t.teardown(() => conn.close());
  const failures: Array<[string, string]> = [];
  conn.on('registration-error', (error, kind) => failures.push([kind, error.message]));
  conn.on('lifecycle', () => undefined).on('block-job', () => undefined);
  await t.notThrowsAsync(conn.eventsReady('lifecycle'));
  // Every caller that asks about block-job hears of the failure, not just the first.
  for (let i = 0; i < 3; i++) {
    await t.throwsAsync(conn.eventsReady('block-job'), { message: /does not support block job events/ });
    await t.throwsAsync(conn.eventsReady(), { message: /does not support block job events/ });
  }
  await t.notThrowsAsync(conn.eventsReady('lifecycle'));
  t.deepEqual(failures, [['block-job', 'this driver does not support block job events']]);
  // Another listener of the kind tries again.
  refuse.now = false;
  conn.on('block-job', () => undefined);
  await t.notThrowsAsync(conn.eventsReady());
  await t.notThrowsAsync(conn.eventsReady('block-job'));
  // Without listeners, a past failure is nobody's concern.
  refuse.now = true;
  conn.removeAllListeners('block-job');
  await t.notThrowsAsync(conn.eventsReady());
});

test('a refused registration without a registration-error listener raises no error event', async (t) => {
  const conn = await connectionRefusingBlockJobs({ now: true });
  t.teardown(() => conn.close());
  conn.on('block-job', () => undefined);
  // An 'error' emitted without a listener would throw out of the registration.
  await t.throwsAsync(conn.eventsReady(), { instanceOf: LibvirtError });
  t.is(conn.listenerCount('error'), 0);
});

/** Resolves once `done()` holds after some output of `virsh`, or after `timeoutMs`. */
async function virshPrinted(virsh: ReturnType<typeof spawn>, done: () => boolean, timeoutMs: number): Promise<void> {
  if (done()) return;
  await new Promise<void>((resolve) => {
    const finish = () => {
      clearTimeout(timer);
      virsh.stdout!.off('data', onData);
      resolve();
    };
    // The test's own listener, added first, has appended the chunk by now.
    const onData = () => done() && finish();
    const timer = setTimeout(finish, timeoutMs);
    virsh.stdout!.on('data', onData);
  });
}

const VIRSH_EVENT_KINDS: Record<string, string> = {
  lifecycle: 'lifecycle',
  'block-job-2': 'block-job',
  'job-completed': 'job-completed',
};

test('events of different kinds reach JS in the order libvirt sent them, as virsh event sees them', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const vm = await createThrowawayDomain(conn, 'event-order', [{ sizeMiB: 8 }]);
  const target = join(IMAGE_DIR, `${vm.name}-order.qcow2`);
  t.teardown(async () => {
    await vm.cleanup();
    await rm(target, { force: true });
  });
  // virsh, a client we did not write, records libvirt's order.
  const virsh = spawn('virsh', ['-c', 'qemu:///system', 'event', '--domain', vm.name, '--all', '--loop'], {
    env: toolEnvironment(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let virshOutput = '';
  virsh.stdout.on('data', (chunk: Buffer) => (virshOutput += chunk.toString()));
  t.teardown(() => virsh.kill());
  // Deliberate: virsh shows no sign of its registration being in place; this gives it the time.
  await new Promise((resolve) => setTimeout(resolve, 500));

  const seen: string[] = [];
  const mine = (domain: Domain) => domain.uuid === vm.domain.uuid;
  // Listeners added in the opposite order to the one libvirt sends the events in.
  conn.on('lifecycle', (domain) => mine(domain) && seen.push('lifecycle'));
  conn.on('block-job', (domain, payload) => mine(domain) && payload.type === BlockJobType.BACKUP && seen.push('block-job'));
  conn.on('job-completed', (domain) => mine(domain) && seen.push('job-completed'));
  await conn.eventsReady();
  await vm.domain.backupBegin({
    mode: 'push',
    disks: [{ name: 'vda', backup: 'yes', type: 'file', target: { file: target }, driver: { type: 'qcow2' } }],
  });
  // The domain is destroyed by another process while this thread is blocked, so
  // that every event of the backup and the destroy is waiting at once.
  spawn('sh', ['-c', `sleep 1.5; virsh -c qemu:///system destroy ${vm.name}`], { env: toolEnvironment(), stdio: 'ignore' });
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 4_000);
  const virshSequence = () =>
    [...virshOutput.matchAll(/^event '([a-z0-9-]+)' for domain/gm)]
      .map((match) => VIRSH_EVENT_KINDS[match[1]!])
      .filter((kind): kind is string => kind !== undefined);
  // Each kind's listener above was added before its wait's, so seen is up to date when the wait looks.
  const arrived = (kind: 'lifecycle' | 'block-job' | 'job-completed') => () => seen.includes(kind);
  await Promise.all(
    (['lifecycle', 'block-job', 'job-completed'] as const).map((kind) =>
      conn.waitFor(kind, { match: arrived(kind), check: arrived(kind), timeoutMs: 20_000 }).catch(() => undefined),
    ),
  );
  await virshPrinted(virsh, () => virshSequence().length >= seen.length, 20_000);
  t.log(seen.join(' -> '));
  t.true(seen.includes('job-completed') && seen.includes('block-job') && seen.includes('lifecycle'), seen.join(', '));
  t.deepEqual(seen, virshSequence().slice(0, seen.length));
});
