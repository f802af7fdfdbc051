import { spawn } from 'node:child_process';

import test from 'ava';

import { threadStacks } from '../../scripts/soak/thread-stacks.js';

test("a hung process's report names every thread and where it waits", async (t) => {
  // A Node process stands for a hung command: its main thread blocked in a native wait.
  const child = spawn(process.execPath, ['-e', 'Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0)'], { stdio: 'ignore' });
  t.teardown(() => child.kill('SIGKILL'));
  await new Promise((resolve) => setTimeout(resolve, 300));
  const stacks = await threadStacks(child.pid!);
  t.regex(stacks, /^Thread \d+ /m, stacks);
  t.regex(stacks, /futex|Atomics|wait/i, 'the main thread is shown in its wait');
  t.true((stacks.match(/^Thread \d+ /gm) ?? []).length >= 2, "Node's own threads are listed too");
});

test('a process that is gone gives a report that says so, not an error', async (t) => {
  const child = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
  await new Promise((resolve) => child.on('close', resolve));
  t.is(await threadStacks(child.pid!), '(no threads readable)');
});
