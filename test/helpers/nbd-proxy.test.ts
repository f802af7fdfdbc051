// The cutting proxy must never hold a connection to the server open that no client
// uses: QEMU 7.2 as Debian ships it freezes, guest and all, when a backup job ends
// while a client is still in the handshake (README, "Known problems").
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import test from 'ava';

import { cuttingProxy } from './nbd-proxy.js';

/** A unix server that counts the connections it accepts and holds them open. */
async function countingServer(t: { teardown(fn: () => unknown): void }): Promise<{ path: string; accepted: () => number }> {
  const dir = await mkdtemp(join(tmpdir(), 'lvbt-proxy-upstream-'));
  const path = join(dir, 'server.sock');
  const held: Socket[] = [];
  const server = createServer((socket) => {
    held.push(socket);
    socket.on('error', () => undefined);
    socket.write('greeting');
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  t.teardown(async () => {
    for (const socket of held) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  });
  return { path, accepted: () => held.length };
}

function connectAndWaitForClose(path: string): { opened: Promise<void>; closed: Promise<void> } {
  const socket = createConnection({ path });
  socket.on('error', () => undefined);
  return {
    opened: new Promise((resolve) => socket.once('connect', () => resolve())),
    closed: new Promise((resolve) => socket.once('close', () => resolve())),
  };
}

/** A proxy whose look-up of the server's address waits until `release()`; `askedFor` resolves once it was asked. */
async function proxyWithSlowLookup(t: { teardown(fn: () => unknown): void }, serverPath: string) {
  let release!: () => void;
  const lookedUp = new Promise<void>((resolve) => (release = resolve));
  let asked!: () => void;
  const askedFor = new Promise<void>((resolve) => (asked = resolve));
  const proxy = await cuttingProxy(async () => {
    asked();
    await lookedUp;
    return serverPath;
  });
  t.teardown(() => proxy.close());
  return { proxy, askedFor, release };
}

test('a cut while the server address is still being looked up opens no connection to the server afterwards', async (t) => {
  const server = await countingServer(t);
  const { proxy, askedFor, release } = await proxyWithSlowLookup(t, server.path);

  const client = connectAndWaitForClose(proxy.socket);
  await client.opened;
  await askedFor;
  t.true(proxy.cut(), 'the client was connected when the cut came');
  await client.closed;
  release();
  // Give a connection the proxy would wrongly open time to reach the server.
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.is(server.accepted(), 0, 'the server never saw a connection');
});

test('a client that leaves while the server address is looked up leaves no connection to the server either', async (t) => {
  const server = await countingServer(t);
  const { proxy, askedFor, release } = await proxyWithSlowLookup(t, server.path);

  const socket = createConnection({ path: proxy.socket });
  socket.on('error', () => undefined);
  await askedFor;
  socket.destroy();
  await new Promise((resolve) => setTimeout(resolve, 50));
  release();
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.is(server.accepted(), 0, 'the server never saw a connection');
});

test('without a cut, bytes pass both ways and a cut closes both ends', async (t) => {
  const server = await countingServer(t);
  const proxy = await cuttingProxy(async () => server.path);
  t.teardown(() => proxy.close());
  const socket = createConnection({ path: proxy.socket });
  socket.on('error', () => undefined);
  const greeting = await new Promise<string>((resolve) => socket.once('data', (chunk: Buffer) => resolve(chunk.toString())));
  t.is(greeting, 'greeting');
  t.is(server.accepted(), 1);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  t.true(proxy.cut());
  await closed;
  t.is(proxy.cutAfter, 'greeting'.length);
});
