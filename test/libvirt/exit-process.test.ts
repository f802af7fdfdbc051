import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import test from 'ava';

import { exitProcess } from '../../src/index.js';

const CHILD = fileURLToPath(new URL('./exit-process-child.ts', import.meta.url));

async function runChild(args: string[]): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string; ms: number }> {
  const started = Date.now();
  const child = spawn(process.execPath, ['--import=tsx', CHILD, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  // A child the watchdog failed to end would hang the test: it is killed, and fails it.
  const killer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('close', (c, s) => resolve([c, s])));
  clearTimeout(killer);
  return { code, signal, stderr, ms: Date.now() - started };
}

test('an exit that hangs once libvirt is loaded ends after the grace time, with the exit code asked for and one line saying so', async (t) => {
  const outcome = await runChild(['7', '500', 'load', 'connect', 'hang']);
  t.is(outcome.signal, null, 'not killed by the test');
  t.is(outcome.code, 7, outcome.stderr);
  t.regex(outcome.stderr, /the process had not exited 500 ms after its outcome was reported; ended with exit code 7/);
});

test('an exit that completes is not held up by the bound, and says nothing', async (t) => {
  const outcome = await runChild(['3', 'default', 'load', 'connect']);
  t.is(outcome.code, 3, outcome.stderr);
  t.is(outcome.stderr, '');
});

test('without the addon loaded there are no libvirt threads and no bound: the exit code is kept', async (t) => {
  const outcome = await runChild(['5', '200']);
  t.is(outcome.code, 5, outcome.stderr);
  t.is(outcome.stderr, '');
});

test('a bad exit code or grace time is refused before anything ends', (t) => {
  t.throws(() => exitProcess(256), { instanceOf: TypeError, message: /code must be an exit code \(an integer 0-255\), got 256/ });
  t.throws(() => exitProcess(1.5), { instanceOf: TypeError, message: /got 1\.5/ });
  t.throws(() => exitProcess(0, { graceMs: -1 }), {
    instanceOf: TypeError,
    message: /options\.graceMs must be a whole number of milliseconds >= 0 \(0: no bound\), got -1/,
  });
});
