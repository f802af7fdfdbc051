import test, { type ExecutionContext } from 'ava';
import { NbdClient, NbdConnectionError, NbdError, NbdProtocolError, type Extent } from '../../src/nbd/index.js';
import { CONTEXT_ID, CONTEXT_NAME, DONE, REPLY, startFakeServer, type FakeRequest, type ReplyWriter } from './fake-server.js';

const unhandled: unknown[] = [];
process.on('unhandledRejection', (reason) => unhandled.push(reason));
test.after.always('no unhandled rejection escaped the client', (t) => {
  t.deepEqual(unhandled, []);
});

const READ = 0;
const BLOCK_STATUS = 7;

function answerReadWell(request: FakeRequest, reply: ReplyWriter): void {
  reply.data(request.cookie, DONE, request.offset, Buffer.alloc(request.length, 0x5a));
}

type Violation = { name: string; send: (request: FakeRequest, reply: ReplyWriter) => void; message: RegExp };

const violations: Violation[] = [
  {
    name: 'bad reply magic',
    send: (r, reply) => reply.chunk(r.cookie, DONE, REPLY.NONE, Buffer.alloc(0), 0, 0xdeadbeef),
    message: /bad reply magic/,
  },
  {
    name: 'unknown reply type',
    send: (r, reply) => reply.chunk(r.cookie, DONE, 42, Buffer.alloc(4)),
    message: /unknown reply type 42/,
  },
  {
    name: 'unknown error reply type',
    send: (r, reply) => reply.chunk(r.cookie, DONE, 0x8000 + 77, Buffer.alloc(6)),
    message: /unknown reply type/,
  },
  {
    name: 'more data than requested',
    send: (r, reply) => reply.data(r.cookie, DONE, r.offset, Buffer.alloc(r.length + 1)),
    message: /were requested/,
  },
  {
    name: 'data outside the requested range',
    send: (r, reply) => reply.data(r.cookie, DONE, r.offset + 1, Buffer.alloc(r.length)),
    message: /outside the request/,
  },
  {
    name: 'chunk longer than the 32 MiB bound',
    send: (r, reply) => reply.chunk(r.cookie, DONE, REPLY.BLOCK_STATUS, Buffer.alloc(0), 32 * 1024 * 1024 + 64 * 1024),
    message: /exceeds the protocol bound/,
  },
  {
    name: 'reply to an unknown cookie',
    send: (r, reply) => reply.data(Buffer.from('ffffffffffffffff', 'hex'), DONE, r.offset, Buffer.alloc(r.length)),
    message: /unknown cookie/,
  },
  {
    name: 'read left with a gap',
    send: (r, reply) => reply.data(r.cookie, DONE, r.offset, Buffer.alloc(r.length - 1)),
    message: /answered with/,
  },
  {
    name: 'block status chunk to a read',
    send: (r, reply) => reply.blockStatus(r.cookie, DONE, CONTEXT_ID, [[r.length, 0]]),
    message: /unexpected NBD_REPLY_TYPE_BLOCK_STATUS/,
  },
];

for (const violation of violations) {
  test(`protocol violation: ${violation.name} closes the connection with a clear error`, async (t) => {
    let requests = 0;
    const { path } = await startFakeServer(t, {
      onRequest: (request, reply) => {
        requests++;
        // The second concurrent request is left unanswered: it must reject, not hang.
        if (request.offset === 0) violation.send(request, reply);
      },
    });
    const client = await NbdClient.connect({ path, connections: 1 });
    const first = client.read(0, 4096);
    const second = client.read(8192, 4096);
    const error = await t.throwsAsync(first, { instanceOf: NbdProtocolError, message: violation.message });
    t.is((error as NbdProtocolError).code, 'NBD_PROTOCOL_ERROR');
    await t.throwsAsync(second, { instanceOf: NbdProtocolError });
    await t.throwsAsync(client.read(0, 10), { instanceOf: NbdProtocolError });
    await client.close();
    t.is(requests, 2);
  });
}

test('every pending request rejects when the server hangs up', async (t) => {
  const { path } = await startFakeServer(t, {
    onRequest: (request, reply) => {
      if (request.offset === 3 * 4096) reply.socket.destroy();
    },
  });
  const client = await NbdClient.connect({ path, connections: 1 });
  const reads = [0, 1, 2, 3].map((i) => client.read(i * 4096, 4096));
  for (const read of reads) await t.throwsAsync(read, { instanceOf: NbdConnectionError });
  await t.throwsAsync(client.flush(), { instanceOf: NbdConnectionError });
  await client.close();
});

test('server errors become NbdError and the connection stays usable', async (t) => {
  const { path } = await startFakeServer(t, {
    onRequest: (request, reply) => {
      if (request.type === READ && request.offset === 0) reply.error(request.cookie, DONE, 5, 'medium error');
      else if (request.type === READ && request.offset === 4096) {
        reply.data(request.cookie, 0, request.offset, Buffer.alloc(request.length));
        const body = Buffer.alloc(6 + 8);
        body.writeUInt32BE(22, 0);
        body.writeBigUInt64BE(BigInt(request.offset + 10), 6);
        reply.chunk(request.cookie, DONE, REPLY.ERROR_OFFSET, body);
      } else if (request.type === 1) reply.simple(request.cookie, 28);
      else if (request.type === READ) answerReadWell(request, reply);
      else reply.simple(request.cookie);
    },
  });
  const client = await NbdClient.connect({ path });
  const eio = await t.throwsAsync(client.read(0, 512), { instanceOf: NbdError });
  t.is(eio.code, 'EIO');
  t.is((eio as NbdError).command, 'NBD_CMD_READ');
  t.regex(eio.message, /medium error/);
  const einval = (await t.throwsAsync(client.read(4096, 512), { instanceOf: NbdError })) as NbdError;
  t.is(einval.code, 'EINVAL');
  t.is(einval.offset, 4096 + 10);
  const enospc = await t.throwsAsync(client.write(0, Buffer.alloc(512)), { instanceOf: NbdError });
  t.is(enospc.code, 'ENOSPC');
  t.true((await client.read(8192, 100)).equals(Buffer.alloc(100, 0x5a)));
  await client.flush();
  await client.close();
});

test('a request times out through its AbortSignal and a late reply is dropped', async (t) => {
  const held: Array<() => void> = [];
  const { path } = await startFakeServer(t, {
    onRequest: (request, reply) => {
      if (request.offset === 0) held.push(() => answerReadWell(request, reply));
      else answerReadWell(request, reply);
    },
  });
  const client = await NbdClient.connect({ path });
  await t.throwsAsync(client.read(0, 4096, { signal: AbortSignal.timeout(100) }), { name: 'TimeoutError' });
  for (const answer of held) answer();
  t.true((await client.read(4096, 16)).equals(Buffer.alloc(16, 0x5a)));
  await client.close();
});

test('connecting times out through its AbortSignal when the server never greets', async (t) => {
  const { path } = await startFakeServer(t, { silent: true });
  const started = Date.now();
  await t.throwsAsync(NbdClient.connect({ path, signal: AbortSignal.timeout(150) }), { name: 'TimeoutError' });
  t.true(Date.now() - started < 5000);
});

test('a bad greeting is refused', async (t) => {
  const { path } = await startFakeServer(t, { greeting: Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n') });
  await t.throwsAsync(NbdClient.connect({ path }), { instanceOf: NbdProtocolError, message: /greeting/ });
});

test('servers without NBD_OPT_GO are entered with NBD_OPT_EXPORT_NAME', async (t) => {
  const size = 3 * 1024 * 1024 + 512;
  const { path } = await startFakeServer(t, { noGo: true, size, onRequest: answerReadWell });
  const client = await NbdClient.connect({ path });
  t.is(client.size, size);
  t.true((await client.read(size - 10, 10)).equals(Buffer.alloc(10, 0x5a)));
  await client.close();
});

/** A server that answers only BLOCK_STATUS, with `answer`'s descriptors; `requested` lists the offsets asked for. */
async function blockStatusServer(
  t: ExecutionContext,
  size: number,
  answer: (request: { offset: number; length: number }) => Array<[number, number]>,
): Promise<{ path: string; requested: number[] }> {
  const requested: number[] = [];
  const { path } = await startFakeServer(t, {
    size,
    onRequest: (request, reply) => {
      if (request.type !== BLOCK_STATUS) return reply.simple(request.cookie, 22);
      requested.push(request.offset);
      reply.blockStatus(request.cookie, DONE, CONTEXT_ID, answer(request));
    },
  });
  return { path, requested };
}

test('block status is asked again until the range is covered, and runs are merged', async (t) => {
  // The server answers at most two 64 KiB descriptors per request, alternating flags.
  const size = 1024 * 1024;
  const step = 64 * 1024;
  const flagsAt = (offset: number): number => (Math.floor(offset / (3 * step)) % 2 === 0 ? 0 : 3);
  const { path, requested } = await blockStatusServer(t, size, (request) => {
    const extents: Array<[number, number]> = [];
    for (let at = request.offset; at < request.offset + request.length && extents.length < 2; at += step) {
      extents.push([step, flagsAt(at)]);
    }
    return extents;
  });
  const client = await NbdClient.connect({ path });
  const extents: Extent[] = [];
  for await (const extent of client.extents(CONTEXT_NAME)) extents.push(extent);
  const expected: Extent[] = [];
  for (let at = 0; at < size; at += step) {
    const last = expected.at(-1);
    if (last && last.flags === flagsAt(at)) last.length += step;
    else expected.push({ offset: at, length: step, flags: flagsAt(at) });
  }
  t.deepEqual(extents, expected);
  t.is(requested.length, size / step / 2);
  await client.close();
});

test('the next block status is on its way while the consumer works through the current answer', async (t) => {
  const size = 1024 * 1024;
  const step = 64 * 1024;
  // One descriptor per answer, flags alternating so that no two runs merge.
  const { path, requested } = await blockStatusServer(t, size, (request) => [[step, (request.offset / step) % 2]]);
  const client = await NbdClient.connect({ path, connections: 1 });
  const extents = client.extents(CONTEXT_NAME);
  t.deepEqual((await extents.next()).value, { offset: 0, length: step, flags: 0 });
  // The first extent is only handed on once the second answer arrived (runs merge),
  // and by then the third question is already out.
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.deepEqual(requested, [0, step, 2 * step]);
  // Stopping early leaves the question in flight unobserved: no unhandled rejection, and close() waits for it.
  await extents.return(undefined);
  await client.close();
});

test('block status that makes no progress is a protocol error', async (t) => {
  const { path } = await startFakeServer(t, {
    onRequest: (request, reply) => reply.chunk(request.cookie, DONE, REPLY.NONE, Buffer.alloc(0)),
  });
  const client = await NbdClient.connect({ path });
  await t.throwsAsync(
    (async () => {
      for await (const extent of client.extents(CONTEXT_NAME)) void extent;
    })(),
    { instanceOf: NbdProtocolError },
  );
  await client.close();
});

test('close() says NBD_CMD_DISC and does not wait for the server to hang up', async (t) => {
  const seen: string[] = [];
  const { path } = await startFakeServer(t, {
    onRequest: (request, reply) => {
      seen.push(`request ${request.type}`);
      if (request.type === READ) answerReadWell(request, reply);
    },
    onDisconnect: () => seen.push('disc'),
    // Like a slow server, this one never closes its end after DISC.
    stayAfterDisconnect: true,
  });
  const client = await NbdClient.connect({ path, connections: 1 });
  t.is((await client.read(0, 4096)).length, 4096);
  const started = performance.now();
  await client.close();
  t.true(performance.now() - started < 2000, 'close() returned without waiting for the server');
  for (let i = 0; i < 100 && !seen.includes('disc'); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  t.deepEqual(seen, [`request ${READ}`, 'disc']);
  await t.throwsAsync(client.read(0, 4096), { instanceOf: NbdConnectionError });
});

test('close() right after connect lets extra connections finish their handshake and ends each with NBD_CMD_DISC', async (t) => {
  let disconnects = 0;
  // HAS_FLAGS | SEND_FLUSH | SEND_WRITE_ZEROES | CAN_MULTI_CONN
  const { path } = await startFakeServer(t, { transmissionFlags: 1 | 4 | 64 | 256, onDisconnect: () => disconnects++ });
  const client = await NbdClient.connect({ path, connections: 4 });
  // The three extra handshakes are still on their way: a cut one is an error in the server's log.
  await client.close();
  for (let i = 0; i < 100 && disconnects < 4; i++) await new Promise((resolve) => setTimeout(resolve, 10));
  t.is(disconnects, 4, 'every connection said NBD_CMD_DISC');
});

test('writes go out in requests of writeRequestSize (256 KiB by default), reads in requestSize (512 KiB)', async (t) => {
  const writes: Array<{ offset: number; length: number }> = [];
  const reads: number[] = [];
  const { path } = await startFakeServer(t, {
    size: 8 * 1024 * 1024,
    onRequest: (request, reply) => {
      if (request.type === 1) {
        t.is(request.payload?.length, request.length);
        writes.push({ offset: request.offset, length: request.length });
        reply.simple(request.cookie);
      } else if (request.type === 0) {
        reads.push(request.length);
        reply.simple(request.cookie, 0, Buffer.alloc(request.length));
      } else {
        reply.simple(request.cookie);
      }
    },
  });
  const byDefault = await NbdClient.connect({ path, metaContexts: [] });
  t.is(byDefault.requestSize, 512 * 1024);
  t.is(byDefault.writeRequestSize, 256 * 1024);
  await byDefault.write(4096, Buffer.alloc(600 * 1024, 1));
  t.deepEqual(
    writes.sort((a, b) => a.offset - b.offset),
    [
      { offset: 4096, length: 256 * 1024 },
      { offset: 4096 + 256 * 1024, length: 256 * 1024 },
      { offset: 4096 + 512 * 1024, length: 88 * 1024 },
    ],
  );
  await byDefault.read(0, 1024 * 1024 + 4096);
  t.deepEqual(
    reads.sort((a, b) => b - a),
    [512 * 1024, 512 * 1024, 4096],
  );
  reads.length = 0;
  for await (const chunk of byDefault.chunks({ range: { offset: 0, length: 1024 * 1024 } })) void chunk;
  t.deepEqual(reads, [512 * 1024, 512 * 1024]);
  await byDefault.close();

  // An explicit requestSize applies to writes too, unless writeRequestSize is given.
  writes.length = 0;
  const sized = await NbdClient.connect({ path, requestSize: 128 * 1024 });
  t.is(sized.writeRequestSize, 128 * 1024);
  await sized.write(0, Buffer.alloc(256 * 1024));
  t.deepEqual(
    writes.map((w) => w.length),
    [128 * 1024, 128 * 1024],
  );
  reads.length = 0;
  await sized.read(0, 256 * 1024);
  t.deepEqual(reads, [128 * 1024, 128 * 1024], 'and to reads');
  await sized.close();
  const both = await NbdClient.connect({ path, requestSize: 128 * 1024, writeRequestSize: 64 * 1024 });
  t.is(both.requestSize, 128 * 1024);
  t.is(both.writeRequestSize, 64 * 1024);
  await both.close();
});

test('sizing options that are not positive integers are refused before connecting, naming the option', async (t) => {
  let connected = false;
  const { path } = await startFakeServer(t, { onRequest: () => (connected = true) });
  for (const [name, value] of [
    ['requestSize', 0],
    ['writeRequestSize', -4096],
    ['maxBytesInFlight', 1.5],
    ['requestsPerConnection', Number.NaN],
    ['connections', 0],
  ] as const) {
    const error = await t.throwsAsync(NbdClient.connect({ path, [name]: value }), { instanceOf: RangeError });
    t.is(error.message, `${name} must be a positive integer, not ${String(value)}`);
  }
  t.false(connected);
});
