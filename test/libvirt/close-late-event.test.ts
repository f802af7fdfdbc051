// libvirt 9.0's remote driver makes a connection's last round trip from inside its
// finalizer and dispatches what arrives meanwhile: a domain event arriving then
// finalizes the connection a second time, and that close waits forever for a lock the
// first one holds (after GLib's "object already finalized" warning). A daemon can send
// an event after the deregistration of its callback returned; close() must let such an
// event in while the connection is alive. No real libvirtd can be made to lose that
// race on purpose, so a peer speaking libvirt's RPC protocol plays the daemon here:
// test/fixtures/late-event-daemon.py.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import test from 'ava';

const DAEMON = fileURLToPath(new URL('../fixtures/late-event-daemon.py', import.meta.url));
const CLIENT = fileURLToPath(new URL('../fixtures/close-with-events.ts', import.meta.url));

test('an event the daemon sends just after its callback was deregistered does not hang close()', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'lvb-late-event-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const socket = join(dir, 'libvirt-sock');
  const daemon = spawn('python3', [DAEMON, socket, '20'], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => daemon.kill('SIGKILL'));
  const said: string[] = [];
  const lines = createInterface({ input: daemon.stdout });
  const listening = new Promise<void>((resolve) => {
    lines.on('line', (line) => {
      said.push(line);
      if (line === 'listening') resolve();
    });
  });
  await listening;

  const client = spawn(process.execPath, ['--import=tsx', CLIENT, `qemu+unix:///system?socket=${socket}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  client.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  client.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const killer = setTimeout(() => client.kill('SIGKILL'), 30_000);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => client.on('close', (c, s) => resolve([c, s])));
  clearTimeout(killer);

  t.is(signal, null, `close() hung (killed after 30 s); the daemon saw: ${said.join(', ')}; stderr: ${stderr}`);
  t.is(code, 0, stderr);
  t.regex(stdout, /^closed in \d+ ms$/m);
  t.notRegex(stderr, /GLib|CRITICAL/);
  // The race was really run: the event came after the deregistration, and before the close.
  const deregistered = said.indexOf('call 168');
  const event = said.indexOf('event');
  const closing = said.indexOf('call 2');
  t.true(deregistered >= 0 && event > deregistered && closing > event, said.join(', '));
});
