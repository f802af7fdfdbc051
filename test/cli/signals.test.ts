import test from 'ava';
import { EventEmitter } from 'node:events';
import { SignalAbort } from '../../src/cli/signals.js';

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
