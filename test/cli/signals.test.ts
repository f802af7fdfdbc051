import test from 'ava';
import { EventEmitter } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SignalAbort, interruptionWording } from '../../src/cli/signals.js';
import { buildSet, tempDir } from '../backup/helpers.js';
import { jsonLines, startCli } from './helpers.js';

function harness(graceMs: number) {
  const emitter = new EventEmitter();
  const exits: number[] = [];
  const forced: number[] = [];
  let now = 0;
  const signals = new SignalAbort({
    graceMs,
    emitter: emitter as unknown as Pick<NodeJS.Process, 'on' | 'off'>,
    now: () => now,
    exit: (code) => exits.push(code),
    onForcedExit: (_signal, inMs) => forced.push(inMs),
  });
  return { emitter, exits, forced, signals, advance: (ms: number) => (now += ms) };
}

test('the first signal aborts and sets the exit code; a late second one exits at once', (t) => {
  const { emitter, exits, forced, signals, advance } = harness(1000);
  t.false(signals.signal.aborted);
  emitter.emit('SIGTERM', 'SIGTERM');
  t.true(signals.signal.aborted);
  t.is(signals.received, 'SIGTERM');
  t.is(signals.exitCode, 143);
  t.deepEqual(exits, [], 'the first signal leaves the exit to the command after its cleanup');
  advance(1500);
  emitter.emit('SIGINT', 'SIGINT');
  t.deepEqual(forced, [0]);
  t.deepEqual(exits, [143], 'the code of the signal that started the abort');
  signals.dispose();
  t.is(emitter.listenerCount('SIGINT'), 0);
  t.is(emitter.listenerCount('SIGTERM'), 0);
});

test('a second signal right after the first waits out the cleanup grace', async (t) => {
  const { emitter, exits, forced, signals } = harness(200);
  emitter.emit('SIGINT', 'SIGINT');
  emitter.emit('SIGINT', 'SIGINT');
  emitter.emit('SIGINT', 'SIGINT');
  t.deepEqual(forced, [200]);
  t.deepEqual(exits, []);
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.deepEqual(exits, [130]);
  signals.dispose();
});

test('a cleanup that ends within the grace cancels the forced exit', async (t) => {
  const { emitter, exits, signals } = harness(100);
  emitter.emit('SIGINT', 'SIGINT');
  emitter.emit('SIGINT', 'SIGINT');
  signals.dispose();
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.deepEqual(exits, []);
});

test('the interruption is worded for the command: verify and list never claim to have removed anything', (t) => {
  for (const command of ['verify', 'list'] as const) {
    const wording = interruptionWording(command, 'SIGINT');
    t.is(wording.outcome, `interrupted by SIGINT: the ${command} stopped before the end; nothing was changed`);
    for (const text of Object.values(wording)) t.notRegex(text, /remov|partial|manifest/, `${command}: ${text}`);
  }
  for (const command of ['backup', 'prune'] as const) {
    t.is(
      interruptionWording(command, 'SIGTERM').outcome,
      `interrupted by SIGTERM: the partial files of this ${command} were removed and manifest.json is unchanged`,
    );
  }
  const restore = interruptionWording('restore', 'SIGINT');
  t.regex(restore.outcome, /partial output of this restore was removed/);
  t.notRegex(restore.outcome, /manifest/);
});

test('an interrupted verify exits 130 and says nothing was changed', async (t) => {
  const builder = await buildSet(t, ['full']);
  // A qemu-img that never answers holds verify in its image check until the signal comes.
  const bin = await tempDir(t, 'slow-qemu-img-');
  const slowQemuImg = join(bin, 'qemu-img');
  await writeFile(slowQemuImg, '#!/bin/sh\nexec sleep 60\n', { mode: 0o755 });
  const cli = startCli(['verify', builder.dir, '--json'], { LIBVIRT_BACKUP_QEMU_IMG: slowQemuImg });
  await cli.waitForLine((line) => line.includes('"type":"progress"'));
  await new Promise((resolve) => setTimeout(resolve, 300));
  cli.child.kill('SIGINT');
  const run = await cli.done;
  t.is(run.code, 130, run.stderr);
  const lines = jsonLines(run.stdout);
  t.like(lines.at(-1), {
    type: 'error',
    code: 'INTERRUPTED',
    message: 'interrupted by SIGINT: the verify stopped before the end; nothing was changed',
    exitCode: 130,
  });
  const notices = lines.filter((line) => line['type'] === 'notice').map((line) => String(line['message']));
  t.deepEqual(notices, ['SIGINT received: stopping the verify; it changes nothing']);
  t.notRegex(run.stderr, /remov/);
});
