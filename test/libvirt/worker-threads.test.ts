import type { Worker } from 'node:worker_threads';

import test from 'ava';

import { connect } from '../../src/index.js';
import { SYSTEM_URI } from '../helpers/daemon.js';
import { startTsWorker } from '../helpers/workers.js';

function startWorker(workerData: { uri: string; rounds: number }): Worker {
  return startTsWorker(new URL('../fixtures/worker-connect.ts', import.meta.url), workerData);
}

function runWorker(uri: string, rounds: number): Promise<{ version: number; count: number }> {
  return new Promise((resolve, reject) => {
    const worker = startWorker({ uri, rounds });
    worker.once('message', resolve);
    worker.once('error', reject);
    worker.once('exit', (code) => {
      if (code !== 0) reject(new Error(`worker exited with ${code}`));
    });
  });
}

test('the addon loads and works in two worker threads at once', async (t) => {
  const [a, b] = await Promise.all([runWorker('test:///default', 50), runWorker(SYSTEM_URI, 20)]);
  t.true(a.version >= 6_000_000);
  t.is(a.count, 50);
  t.is(b.version, a.version);
  // The main thread's copy keeps working alongside.
  const conn = await connect('test:///default');
  t.is((await conn.listAllDomains()).length, 1);
  await conn.close();
});

test('terminating a worker with calls in flight does not crash the process', async (t) => {
  const worker = startWorker({ uri: 'test:///default', rounds: 100_000 });
  // Deliberate: the worker runs calls back to back; any moment has some in flight.
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const code = await worker.terminate();
  t.is(code, 1);
  const conn = await connect('test:///default');
  t.is((await conn.listAllDomains()).length, 1);
  await conn.close();
});
