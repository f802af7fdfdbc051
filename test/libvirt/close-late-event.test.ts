// libvirt 9.0's remote driver makes a connection's last round trip from inside its
// finalizer and dispatches what arrives meanwhile: a domain event arriving then
// finalizes the connection a second time, and that close waits forever for a lock the
// first one holds (after GLib's "object already finalized" warning). A daemon can send
// an event after the deregistration of its callback returned; the connection's end
// must let such an event in while the connection is alive. No real libvirtd can be
// made to lose that race on purpose, so a peer speaking libvirt's RPC protocol plays
// the daemon here: test/fixtures/late-event-daemon.py.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import test, { type ExecutionContext } from 'ava';

const DAEMON = fileURLToPath(new URL('../fixtures/late-event-daemon.py', import.meta.url));
const CLIENT = fileURLToPath(new URL('../fixtures/close-with-events.ts', import.meta.url));

interface RaceOutcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** What the peer saw and did, in order. */
  said: string[];
}

/** Runs test/fixtures/close-with-events.ts in `mode` against a peer that sends an event 20 ms after the last deregistration. */
async function raceLateEvent(t: ExecutionContext, mode: 'close' | 'collect'): Promise<RaceOutcome> {
  const dir = await mkdtemp(join(tmpdir(), 'lvb-late-event-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const socket = join(dir, 'libvirt-sock');
  const daemon = spawn('python3', [DAEMON, socket, '20'], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => daemon.kill('SIGKILL'));
  const said: string[] = [];
  const lines = createInterface({ input: daemon.stdout });
  await new Promise<void>((resolve) => {
    lines.on('line', (line) => {
      said.push(line);
      if (line === 'listening') resolve();
    });
  });
  const client = spawn(process.execPath, ['--expose-gc', '--import=tsx', CLIENT, `qemu+unix:///system?socket=${socket}`, mode], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  client.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  client.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  // A client whose close hangs is ended here, and the test fails on it.
  const killer = setTimeout(() => client.kill('SIGKILL'), 30_000);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => client.on('close', (c, s) => resolve([c, s])));
  clearTimeout(killer);
  return { code, signal, stdout, stderr, said };
}

/** The race was really run: the event came after the deregistration, and was read before the connection's last round trip. */
function assertEventReadBeforeClose(t: ExecutionContext, said: readonly string[]): void {
  const deregistered = said.indexOf('call 168');
  const event = said.indexOf('event');
  const closing = said.indexOf('call 2');
  t.true(deregistered >= 0 && event > deregistered && closing > event, said.join(', '));
}

test('an event the daemon sends just after its callback was deregistered does not hang close()', async (t) => {
  const { code, signal, stdout, stderr, said } = await raceLateEvent(t, 'close');
  t.is(signal, null, `close() hung (killed after 30 s); the daemon saw: ${said.join(', ')}; stderr: ${stderr}`);
  t.is(code, 0, stderr);
  t.regex(stdout, /^closed in \d+ ms$/m);
  t.notRegex(stderr, /GLib|CRITICAL/);
  assertEventReadBeforeClose(t, said);
});

test('a connection dropped without close() once its listeners went is collected, and lets the late event in too', async (t) => {
  const { code, signal, stdout, stderr, said } = await raceLateEvent(t, 'collect');
  t.is(signal, null, stderr);
  t.is(code, 0, stderr);
  t.regex(stdout, /^collected$/m);
  t.notRegex(stderr, /GLib|CRITICAL/);
  // 'call 2' is the connection's last round trip: it was collected and closed.
  assertEventReadBeforeClose(t, said);
});
