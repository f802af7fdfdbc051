import test, { type ExecutionContext } from 'ava';
import { readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { tlsRelay } from '../../src/backup/engine/tls-relay.js';
import { nativeAddon } from '../../src/libvirt/native.js';
import { NbdClient, NbdOptionError, NbdTimeoutError } from '../../src/nbd/index.js';
import { IHAVEOPT, NBDMAGIC, OPTION_REPLY_MAGIC } from '../../src/nbd/protocol.js';
import { freePort, startQemuNbd } from './helpers.js';
import { tlsExport } from './tls-export.js';

/** qemu-nbd serving a small qcow2 over TLS (on `path`, or on TCP), certificates made for the test. */
async function serveWithTls(t: ExecutionContext, on: 'unix' | 'tcp' = 'unix') {
  const { dir, serverArgs, ca, otherCa, client, expected } = await tlsExport(t);
  const socket = join(dir, 'tls.sock');
  const tcp = { host: '127.0.0.1', port: await freePort() };
  await startQemuNbd(t, on === 'unix' ? { path: socket } : tcp, serverArgs);
  return { socket, tcp, ca, otherCa, client, expected };
}

// The addon starts threads of its own when it loads: load it before any count.
nativeAddon();

/** Threads of this process: a relay's two threads must end with its connection. */
function threadCount(): number {
  return readdirSync('/proc/self/task').length;
}

async function settledThreadCount(atMost: number): Promise<number> {
  let count = threadCount();
  for (let i = 0; i < 100 && count > atMost; i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    count = threadCount();
  }
  return count;
}

/** A server that acknowledges NBD_OPT_STARTTLS and then says nothing more. */
async function silentAfterStartTls(t: ExecutionContext): Promise<number> {
  const sockets: Socket[] = [];
  const server: Server = createServer((socket) => {
    sockets.push(socket);
    const greeting = Buffer.alloc(18);
    greeting.writeBigUInt64BE(NBDMAGIC, 0);
    greeting.writeBigUInt64BE(IHAVEOPT, 8);
    greeting.writeUInt16BE(1, 16);
    socket.write(greeting);
    let received = Buffer.alloc(0);
    socket.on('data', (chunk) => {
      received = Buffer.concat([received, chunk]);
      // Client flags (4) and the STARTTLS option header (16).
      if (received.length < 20) return;
      const reply = Buffer.alloc(20);
      reply.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
      reply.writeUInt32BE(5, 8);
      reply.writeUInt32BE(1, 12);
      reply.writeUInt32BE(0, 16);
      socket.write(reply);
      socket.removeAllListeners('data');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const socket of sockets) socket.destroy();
    server.close();
  });
  return (server.address() as { port: number }).port;
}

test('a TLS export reads the same bytes, with a client certificate', async (t) => {
  const { socket, ca, client: clientCert, expected } = await serveWithTls(t);
  const client = await NbdClient.connect({
    path: socket,
    tls: { ca: await readFile(ca.cert), cert: await readFile(clientCert.cert), key: await readFile(clientCert.key) },
  });
  t.teardown(() => client.close());
  await client.ready();
  // Over TLS every request in flight goes on one connection, 8 MiB deep (see client.ts).
  t.true(client.canMultiConn);
  t.is(client.connectionCount, 1);
  t.is(client.maxBytesInFlight, 8 * 1024 * 1024);
  t.true((await client.read(0, client.size)).equals(expected));
  let dataBytes = 0;
  for await (const chunk of client.chunks()) if (chunk.kind === 'data') dataBytes += chunk.length;
  t.true(dataBytes > 0 && dataBytes < client.size);
});

test('a TLS export refuses a client that trusts another CA, or that skips TLS', async (t) => {
  const { socket, otherCa, client: clientCert } = await serveWithTls(t);
  const error = await t.throwsAsync(
    NbdClient.connect({
      path: socket,
      tls: { ca: await readFile(otherCa.cert), cert: await readFile(clientCert.cert), key: await readFile(clientCert.key) },
    }),
  );
  t.regex(error.message, /certificate/i);
  const plain = await t.throwsAsync(NbdClient.connect({ path: socket }), { instanceOf: NbdOptionError });
  t.is(plain.code, 'NBD_REP_ERR_TLS_REQD');
});

test.serial('a relayed TLS connection (GnuTLS on its own threads) reads the same bytes over TCP and a unix socket, and its threads end with it', async (t) => {
  for (const on of ['tcp', 'unix'] as const) {
    const { socket, tcp, ca, client: clientCert, expected } = await serveWithTls(t, on);
    const tls = { ca: await readFile(ca.cert), cert: await readFile(clientCert.cert), key: await readFile(clientCert.key), relay: tlsRelay };
    const before = threadCount();
    const client = await NbdClient.connect({ ...(on === 'tcp' ? tcp : { path: socket }), tls, connections: 2 });
    await client.ready();
    t.is(client.connectionCount, 2, on);
    t.true((await client.read(0, client.size)).equals(expected), on);
    let covered = 0;
    for await (const chunk of client.chunks()) {
      covered += chunk.length;
      if (chunk.kind === 'data') t.true(chunk.data.equals(expected.subarray(chunk.offset, chunk.offset + chunk.length)), on);
    }
    t.is(covered, client.size, on);
    t.true(threadCount() >= before + 4, `${on}: two threads per relayed connection`);
    await client.close();
    t.true((await settledThreadCount(before)) <= before, `${on}: the relay's threads end when the connection closes`);
  }
});

test('a relayed TLS handshake refuses a server whose CA it does not trust, or whose certificate does not carry the name', async (t) => {
  const { tcp, ca, otherCa, client: clientCert } = await serveWithTls(t, 'tcp');
  const cert = await readFile(clientCert.cert);
  const key = await readFile(clientCert.key);
  const untrusted = await t.throwsAsync(NbdClient.connect({ ...tcp, tls: { ca: await readFile(otherCa.cert), cert, key, relay: tlsRelay } }));
  t.regex(untrusted.message, /certificate verification failed.*(issuer|not trusted)/i);
  const misnamed = await t.throwsAsync(
    NbdClient.connect({ ...tcp, tls: { ca: await readFile(ca.cert), cert, key, servername: 'elsewhere.example', relay: tlsRelay } }),
  );
  t.regex(misnamed.message, /certificate verification failed.*(hostname|name)/i);
  // Without verification the same server is accepted.
  const unverified = await NbdClient.connect({ ...tcp, tls: { cert, key, rejectUnauthorized: false, relay: tlsRelay } });
  t.true(unverified.size > 0);
  await unverified.close();
});

test.serial('a relayed TLS handshake the server never answers ends at the stall timeout or on abort, leaving no thread behind', async (t) => {
  const port = await silentAfterStartTls(t);
  const before = threadCount();
  const started = Date.now();
  await t.throwsAsync(NbdClient.connect({ host: '127.0.0.1', port, stallTimeout: 300, tls: { relay: tlsRelay } }), { instanceOf: NbdTimeoutError });
  const aborting = new AbortController();
  setTimeout(() => aborting.abort(new Error('stopped by the caller')), 200);
  await t.throwsAsync(NbdClient.connect({ host: '127.0.0.1', port, signal: aborting.signal, tls: { relay: tlsRelay } }), { message: 'stopped by the caller' });
  t.true(Date.now() - started < 5000);
  t.true((await settledThreadCount(before)) <= before, 'the cancelled handshakes ended their threads');
});
