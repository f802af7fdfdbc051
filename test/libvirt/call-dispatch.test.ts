// How libvirt calls are run (binding/call_dispatcher.cc): a connection's quick
// calls share a few threads, but a call that is stuck never holds up the rest
// of its connection, and a call that outlives its worker thread's environment
// is dropped without harm.
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

import test, { type ExecutionContext } from 'ava';

import { configureCalls, connect, getCallTuning } from '../../src/index.js';
import { connectSystem, createThrowawayDomain, SYSTEM_URI, type ThrowawayDomain } from '../helpers/daemon.js';
import { startTsWorker } from '../helpers/workers.js';

/** A running throwaway domain, removed when the test ends, and its QEMU's pid. */
async function domainWithQemuPid(t: ExecutionContext, label: string): Promise<{ vm: ThrowawayDomain; pid: number }> {
  const conn = await connectSystem();
  const vm = await createThrowawayDomain(conn, label);
  t.teardown(async () => {
    await vm.cleanup();
    await conn.close();
  });
  const pid = Number((await readFile(`/run/libvirt/qemu/${vm.name}.pid`, 'utf8')).trim());
  return { vm, pid };
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([promise, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms))]);
}

test('a call stuck on a frozen QEMU does not hold up other calls on the same connection', async (t) => {
  const { vm, pid } = await domainWithQemuPid(t, 'stuck-call');
  let settled = 0;
  let stuck: Array<Promise<string>>;
  try {
    process.kill(pid, 'SIGSTOP');
    // libvirt waits for QEMU's monitor to answer, which it cannot while stopped;
    // the second and third wait for the first one's job. Three, so they fill
    // more than the connection's share of quick-call threads.
    stuck = Array.from({ length: 3 }, () => vm.domain.qemuMonitorCommand('{"execute":"query-status"}'));
    for (const call of stuck) {
      call.then(
        () => settled++,
        () => settled++,
      );
    }
    // Deliberate: time in which a call not held by the frozen QEMU would have finished.
    await sleep(300);
    t.is(settled, 0, 'no monitor command can finish while QEMU is stopped');

    // Quick calls on the same connection and domain, one after another and 32 at once.
    for (let i = 0; i < 20; i++) {
      t.regex(await within(vm.domain.getXMLDesc(), 20_000, 'a sequential getXMLDesc'), /<domain/);
    }
    const burst = await within(Promise.all(Array.from({ length: 32 }, () => vm.domain.getXMLDesc())), 20_000, '32 concurrent getXMLDesc calls');
    t.is(burst.length, 32);
    t.is((await vm.domain.getState()).state, 1); // still RUNNING as far as libvirt knows
    t.is(settled, 0, 'the stuck calls are still waiting');
  } finally {
    process.kill(pid, 'SIGCONT');
  }
  const replies = await within(Promise.all(stuck), 30_000, 'the monitor commands after SIGCONT');
  for (const text of replies) {
    const reply = JSON.parse(text) as { return: { running: boolean } };
    t.true(reply.return.running);
  }
});

test('a call still running when its worker thread is terminated is dropped without harm', async (t) => {
  const { vm, pid } = await domainWithQemuPid(t, 'stuck-worker');
  process.kill(pid, 'SIGSTOP');
  try {
    const worker = startTsWorker(new URL('../fixtures/worker-stuck-call.ts', import.meta.url), {
      uri: SYSTEM_URI,
      domainName: vm.name,
    });
    const messages: string[] = [];
    const started = new Promise<void>((resolve, reject) => {
      worker.once('error', reject);
      worker.on('message', (message: string) => {
        messages.push(message);
        if (message === 'started') resolve();
      });
    });
    await within(started, 30_000, 'the worker starting its call');
    // Deliberate: lets the call reach libvirt, which gives no sign of it.
    await sleep(200);
    t.is(await worker.terminate(), 1);
    t.deepEqual(messages, ['started']);
  } finally {
    process.kill(pid, 'SIGCONT');
  }
  // The abandoned call now completes on a call thread, for an environment that
  // is gone; this process and its own calls carry on.
  await sleep(500);
  for (let i = 0; i < 20; i++) t.regex(await vm.domain.getXMLDesc(), /<domain/);
  t.true(JSON.parse(await vm.domain.qemuMonitorCommand('{"execute":"query-status"}')).return.running);
});

test('configureCalls changes the tuning and refuses bad settings by name', async (t) => {
  const before = getCallTuning();
  t.true(Number.isInteger(before.maxThreads) && before.maxThreads >= 1);
  t.true(Number.isInteger(before.busyPollMicroseconds) && before.busyPollMicroseconds >= 0);

  t.throws(() => configureCalls({ maxThreads: 0 }), { instanceOf: RangeError, message: /maxThreads must be an integer from 1 to 256, got 0/ });
  t.throws(() => configureCalls({ busyPollMicroseconds: 1.5 }), { instanceOf: RangeError, message: /busyPollMicroseconds/ });
  t.throws(() => configureCalls({ busyPollMicroseconds: -1 }), { instanceOf: RangeError, message: /busyPollMicroseconds/ });
  t.throws(() => configureCalls({ threads: 4 } as never), { instanceOf: TypeError, message: /unknown setting "threads"/ });
  t.throws(() => configureCalls(null as never), { instanceOf: TypeError, message: /must be an object/ });
  t.deepEqual(getCallTuning(), before, 'a refused setting changes nothing');

  // Polling off: calls still complete, just with a thread wake-up each way.
  t.deepEqual(configureCalls({ busyPollMicroseconds: 0 }), { ...before, busyPollMicroseconds: 0 });
  try {
    const conn = await connect('test:///default');
    const [domain] = await conn.listAllDomains();
    for (let i = 0; i < 50; i++) t.regex(await domain!.getXMLDesc(), /<name>test<\/name>/);
    t.is((await Promise.all(Array.from({ length: 50 }, () => domain!.getXMLDesc()))).length, 50);
    await conn.close();
  } finally {
    t.deepEqual(configureCalls({ busyPollMicroseconds: before.busyPollMicroseconds }), before);
  }
});
