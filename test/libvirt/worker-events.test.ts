// libvirt keeps every event registration a worker thread made, and its event
// thread goes on delivering to them after the worker's environment is gone.
// test:///default is one driver for the whole process: the domains this thread
// defines and undefines raise events on the workers' connections too, delivered
// by the addon's event-loop thread, with no daemon in between.
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Worker as NodeWorker, type Worker } from 'node:worker_threads';

import test, { type ExecutionContext } from 'ava';

import { connect, type Connection } from '../../src/index.js';
import { startTsWorker } from '../helpers/workers.js';

/** Defines and undefines a domain over and over: lifecycle events on every connection of the process. */
const URI = 'test:///default';

function keepEventsComing(conn: Connection, label: string): { stop(): Promise<number> } {
  const xml = `<domain type='test'><name>lvb-${label}-${process.pid}</name><memory>65536</memory><os><type>hvm</type></os></domain>`;
  let running = true;
  let cycles = 0;
  const loop = (async () => {
    while (running) {
      const domain = await conn.defineDomain(xml);
      await domain.undefine();
      cycles++;
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return cycles;
    },
  };
}

function waitFor(worker: Worker, message: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onMessage = (received: unknown) => {
      if (received === message) {
        worker.off('message', onMessage);
        resolve();
      }
    };
    worker.on('message', onMessage);
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`worker exited with ${code} before "${message}"`)));
  });
}

type StartWorker = () => Worker;

const startNativeWorker: StartWorker = () => new NodeWorker(new URL('../fixtures/worker-events-native.mjs', import.meta.url), { workerData: { uri: URI } });
const startTsWorkerOnEvents: StartWorker = () => startTsWorker(new URL('../fixtures/worker-events.ts', import.meta.url), { uri: URI });

async function terminateWhileEventsCome(t: ExecutionContext, label: string, start: StartWorker, rounds: number): Promise<void> {
  const conn = await connect(URI);
  t.teardown(() => conn.close());
  const events = keepEventsComing(conn, label);
  try {
    for (let round = 0; round < rounds; round++) {
      const worker = start();
      await waitFor(worker, 'receiving');
      // Terminate at varying points of a delivery.
      await sleep(round % 7);
      t.is(await worker.terminate(), 1);
    }
  } finally {
    t.log(`${await events.stop()} define/undefine cycles while ${rounds} workers came and went`);
  }
  // Events queued for the dead workers' registrations went nowhere; this process still works.
  await sleep(500);
  t.true(await conn.isAlive());
  t.true(Array.isArray(await conn.listAllDomains()));
}

test('a worker registered for every event kind on the addon is terminated while events keep coming, 100 times', async (t) => {
  await terminateWhileEventsCome(t, 'native-worker', startNativeWorker, Number(process.env.ROUNDS ?? 100));
});

test('a worker listening to every event kind of a Connection is terminated while events keep coming', async (t) => {
  await terminateWhileEventsCome(t, 'ts-worker', startTsWorkerOnEvents, 10);
});

test('a process whose only users of the addon are worker threads survives their end', async (t) => {
  const fixture = new URL('../fixtures/worker-only-user.mjs', import.meta.url);
  const { code, signal, output } = await new Promise<{ code: number | null; signal: string | null; output: string }>((resolve) => {
    const child = spawn(process.execPath, [fileURLToPath(fixture)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('exit', (code, signal) => resolve({ code, signal, output }));
  });
  t.is(signal, null, output);
  t.is(code, 0, output);
  t.regex(output, /survived/);
});
