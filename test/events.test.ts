import { spawn } from 'node:child_process';

import test from 'ava';

import { connect, type Domain, LifecycleEvent, type LifecyclePayload } from '../src/index.js';
import { connectSystem, createThrowawayDomain } from './helpers/daemon.js';

test('200 lifecycle events from start/destroy cycles reach JS in order', async (t) => {
  const conn = await connect('test:///default');
  t.teardown(() => conn.close());
  const name = `lvb-events-${process.pid}`;
  const domain = await conn.defineDomain(
    `<domain type='test'><name>${name}</name><memory>65536</memory><os><type>hvm</type></os></domain>`,
  );
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
  const deadline = Date.now() + 10_000;
  while (seen.length < 200 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
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
  const deadline = Date.now() + 10_000;
  while (seen.filter(([, e]) => e === LifecycleEvent.STOPPED).length < cycles && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
  }
  const startsAndStops = seen.filter(([, e]) => e === LifecycleEvent.STARTED || e === LifecycleEvent.STOPPED);
  const { STARTED, STOPPED } = LifecycleEvent;
  t.is(startsAndStops.length, 2 * cycles);
  t.deepEqual(startsAndStops.map(([, e]) => e), Array.from({ length: 2 * cycles }, (_, i) => (i % 2 === 0 ? STARTED : STOPPED)));
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
  await domain.start();
  await domain.destroy();
  await domain.undefine();
  await new Promise((r) => setTimeout(r, 200));
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
    import { connect } from './src/index.ts';
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
    import { connect } from './src/index.ts';
    const conn = await connect('qemu:///system');
    conn.on('lifecycle', () => {});
    await conn.eventsReady();
    await conn.close();
    console.log('closed');
  `);
  t.is(result.code, 0, result.output);
});
