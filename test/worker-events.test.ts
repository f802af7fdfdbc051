// libvirt keeps every event registration a worker thread made, and its event
// thread goes on delivering to them after the worker's environment is gone.
import { setTimeout as sleep } from 'node:timers/promises';
import { Worker as NodeWorker, type Worker } from 'node:worker_threads';

import test, { type ExecutionContext } from 'ava';

import { connectSystem, SYSTEM_URI, uniqueName } from './helpers/daemon.js';
import { startTsWorker } from './helpers/workers.js';

/** Defines and undefines a domain over and over: a lifecycle event each time, to every connection. */
function keepEventsComing(conn: Awaited<ReturnType<typeof connectSystem>>): { stop(): Promise<number> } {
  const name = uniqueName('worker-events');
  const xml = `<domain type='qemu'><name>${name}</name><memory unit='MiB'>32</memory><os><type arch='x86_64'>hvm</type></os></domain>`;
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

const startNativeWorker: StartWorker = () =>
  new NodeWorker(new URL('./fixtures/worker-events-native.mjs', import.meta.url), { workerData: { uri: SYSTEM_URI } });
const startTsWorkerOnEvents: StartWorker = () =>
  startTsWorker(new URL('./fixtures/worker-events.ts', import.meta.url), { uri: SYSTEM_URI });

async function terminateWhileEventsCome(t: ExecutionContext, start: StartWorker, rounds: number): Promise<void> {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const events = keepEventsComing(conn);
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
  await terminateWhileEventsCome(t, startNativeWorker, 100);
});

test('a worker listening to every event kind of a Connection is terminated while events keep coming', async (t) => {
  await terminateWhileEventsCome(t, startTsWorkerOnEvents, 10);
});
