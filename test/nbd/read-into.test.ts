// read(offset, length, { into }): the socket reads payloads straight into the caller's
// memory. Checked against real qemu-nbd exports (holes, many reads in flight, an error
// injected by blkdebug) and, for what a real server never does on cue (stalling in the
// middle of a payload, an error chunk after part of the data), the scripted server.
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { AllocationFlags, BASE_ALLOCATION, NbdClient, NbdError, type Extent } from '../../src/nbd/index.js';
import { PLACE, type PlacingReadSink } from '../../src/nbd/connection.js';
import { DONE, REPLY, STRUCTURED_REPLY_MAGIC, startFakeServer } from './fake-server.js';
import { run, startQemuNbd, tempDir } from './helpers.js';

const MiB = 1024 * 1024;
const SIZE = 32 * MiB;
const GARBAGE = 0xee;

/** Random data with runs of zeroes between, which qemu-img leaves unallocated (holes). */
function imageBytes(): Buffer {
  const bytes = Buffer.alloc(SIZE);
  for (const [from, to] of [
    [0, 5 * MiB],
    [9 * MiB, 9 * MiB + 12_345],
    [20 * MiB - 4096, 31 * MiB],
  ] as const) {
    randomBytes(to - from).copy(bytes, from);
  }
  return bytes;
}

async function serveImage(t: ExecutionContext): Promise<{ socket: string; expected: Buffer }> {
  const dir = await tempDir(t);
  const expected = imageBytes();
  const raw = join(dir, 'image.raw');
  await writeFile(raw, expected);
  const image = join(dir, 'image.qcow2');
  await run('qemu-img', ['convert', '-O', 'qcow2', raw, image]);
  const socket = join(dir, 'nbd.sock');
  await startQemuNbd(t, { path: socket }, ['--read-only', '-f', 'qcow2', image]);
  return { socket, expected };
}

/** Deterministic pseudo-random numbers, so a failure can be replayed. */
function numbers(seed: number): () => number {
  let state = seed;
  return () => {
    state = (Math.imul(state, 1_103_515_245) + 12_345) >>> 0;
    return state / 2 ** 32;
  };
}

async function collect(iterable: AsyncIterable<Extent>): Promise<Extent[]> {
  const out: Extent[] = [];
  for await (const extent of iterable) out.push(extent);
  return out;
}

for (const structuredReplies of [true, false]) {
  test(`into-reads equal plain reads and the image, across holes, many in flight (${structuredReplies ? 'structured' : 'simple'} replies)`, async (t) => {
    const { socket, expected } = await serveImage(t);
    const client = await NbdClient.connect({ path: socket, requestSize: 256 * 1024, structuredReplies, metaContexts: [BASE_ALLOCATION] });
    t.teardown(() => client.close());
    await client.ready();
    if (structuredReplies) {
      // The export really has holes, so reads of them must zero the caller's memory.
      const zeroes = (await collect(client.extents(BASE_ALLOCATION))).filter((e) => e.flags & AllocationFlags.ZERO);
      t.true(zeroes.some((e) => e.offset <= 6 * MiB && e.offset + e.length >= 8 * MiB));
    }

    // Whole-export read into one buffer, at an offset inside it, with guard bytes around.
    const whole = Buffer.alloc(SIZE + 200, GARBAGE);
    const read = await client.read(0, SIZE, { into: whole, intoOffset: 100 });
    t.true(read.equals(expected));
    t.is(read.buffer, whole.buffer);
    t.is(read.byteOffset, whole.byteOffset + 100);
    t.true(whole.subarray(0, 100).equals(Buffer.alloc(100, GARBAGE)));
    t.true(whole.subarray(SIZE + 100).equals(Buffer.alloc(100, GARBAGE)));

    // 64 reads in flight at once, unaligned, over data and holes, into slots of one
    // buffer (Uint8Array, not Buffer) with a guard between slots.
    const random = numbers(structuredReplies ? 1 : 2);
    const slot = MiB;
    const slots = new Uint8Array(64 * slot).fill(GARBAGE);
    const ranges = Array.from({ length: 64 }, () => {
      const length = 1 + Math.floor(random() * (slot - 4096));
      return { offset: Math.floor(random() * (SIZE - length)), length };
    });
    const intoReads = ranges.map((range, i) => client.read(range.offset, range.length, { into: slots, intoOffset: i * slot }));
    const plainReads = ranges.map((range) => client.read(range.offset, range.length));
    const [into, plain] = await Promise.all([Promise.all(intoReads), Promise.all(plainReads)]);
    ranges.forEach((range, i) => {
      const want = expected.subarray(range.offset, range.offset + range.length);
      if (!into[i]!.equals(want) || !plain[i]!.equals(want)) t.fail(`read ${range.offset}+${range.length} differs from the image`);
      const guard = Buffer.from(slots.buffer, i * slot + range.length, slot - range.length);
      if (!guard.equals(Buffer.alloc(guard.length, GARBAGE))) t.fail(`read ${range.offset}+${range.length} wrote past its end`);
    });

    // A DataView works as well; an empty read touches nothing.
    const view = new DataView(new ArrayBuffer(8 * MiB));
    t.true((await client.read(4 * MiB, 8 * MiB, { into: view })).equals(expected.subarray(4 * MiB, 12 * MiB)));
    t.is((await client.read(SIZE, 0, { into: Buffer.alloc(0) })).length, 0);
  });
}

test('bad into-read arguments are refused with errors naming what is wrong, and nothing is sent', async (t) => {
  const { socket, expected } = await serveImage(t);
  const client = await NbdClient.connect({ path: socket });
  t.teardown(() => client.close());
  const buffer = Buffer.alloc(MiB);
  const refuse = (call: () => Promise<Buffer>, error: { instanceOf: new (...args: never[]) => Error; message: RegExp }): Promise<unknown> =>
    t.throwsAsync(call, error);
  await refuse(() => client.read(0, 16, { into: new ArrayBuffer(16) as never }), { instanceOf: TypeError, message: /into must be .* not ArrayBuffer/ });
  await refuse(() => client.read(0, 16, { into: 'text' as never }), { instanceOf: TypeError, message: /into must be .* not string/ });
  await refuse(() => client.read(0, MiB + 1, { into: buffer }), {
    instanceOf: RangeError,
    message: /into holds 1048576 bytes: 1048577 bytes from intoOffset 0 need 1048577/,
  });
  await refuse(() => client.read(0, 16, { into: buffer, intoOffset: MiB - 8 }), {
    instanceOf: RangeError,
    message: /into holds 1048576 bytes: 16 bytes from intoOffset 1048568 need 1048584/,
  });
  await refuse(() => client.read(0, 16, { into: buffer, intoOffset: -1 }), {
    instanceOf: RangeError,
    message: /intoOffset must be a non-negative integer, not -1/,
  });
  await refuse(() => client.read(0, 16, { into: buffer, intoOffset: 1.5 }), {
    instanceOf: RangeError,
    message: /intoOffset must be a non-negative integer, not 1.5/,
  });
  await refuse(() => client.read(-512, 16, { into: buffer }), { instanceOf: RangeError, message: /offset must be a non-negative integer, not -512/ });
  await refuse(() => client.read(0, 0.5, { into: buffer }), { instanceOf: RangeError, message: /length must be a non-negative integer, not 0.5/ });
  await refuse(() => client.read(SIZE - 8, 16, { into: buffer }), {
    instanceOf: RangeError,
    message: /range 33554424\+16 lies outside the export \(33554432 bytes\): it ends 8 bytes past the end/,
  });
  t.true(buffer.equals(Buffer.alloc(MiB)));
  t.true((await client.read(SIZE - 16, 16, { into: buffer })).equals(expected.subarray(SIZE - 16)));
});

test('an error reply rejects only its own into-read; the reads in flight beside it are intact', async (t) => {
  const dir = await tempDir(t);
  const expected = randomBytes(16 * MiB);
  const raw = join(dir, 'image.raw');
  await writeFile(raw, expected);
  const socket = join(dir, 'nbd.sock');
  // Reads touching sector 8192 (byte 4 MiB) fail with EIO. qemu-nbd 7.2 answers a failed
  // structured read by dropping the connection, so this export is read with simple replies.
  const faulty = {
    driver: 'raw',
    file: { driver: 'blkdebug', 'inject-error': [{ event: 'read_aio', sector: 8192, errno: 5, once: false }], image: { driver: 'file', filename: raw } },
  };
  await startQemuNbd(t, { path: socket }, ['--read-only', `json:${JSON.stringify(faulty)}`]);
  const client = await NbdClient.connect({ path: socket, structuredReplies: false });
  t.teardown(() => client.close());
  const piece = MiB;
  const buffers = Array.from({ length: 16 }, () => Buffer.alloc(piece, GARBAGE));
  const reads = buffers.map((buffer, i) => client.read(i * piece, piece, { into: buffer }));
  const results = await Promise.allSettled(reads);
  results.forEach((result, i) => {
    if (i === 4) {
      t.is(result.status, 'rejected');
      const reason = (result as PromiseRejectedResult).reason as NbdError;
      t.true(reason instanceof NbdError);
      t.is(reason.code, 'EIO');
      t.is(reason.command, 'NBD_CMD_READ');
    } else {
      t.is(result.status, 'fulfilled', `read ${i}`);
      t.true(buffers[i]!.equals(expected.subarray(i * piece, (i + 1) * piece)), `read ${i} holds the image's bytes`);
    }
  });
  // The connection survives: the failed range is still refused, the rest reads.
  await t.throwsAsync(client.read(4 * MiB, 512, { into: buffers[4]! }), { instanceOf: NbdError });
  t.true((await client.read(3 * MiB, piece, { into: buffers[3]! })).equals(expected.subarray(3 * MiB, 4 * MiB)));
});

test('an error chunk after part of the data rejects that into-read alone; its neighbours are intact', async (t) => {
  const piece = 256 * 1024;
  const content = (offset: number, length: number): Buffer => Buffer.alloc(length, (offset / piece) & 0xff);
  const { path } = await startFakeServer(t, {
    size: 16 * piece,
    onRequest: (request, reply) => {
      if (request.offset === 5 * piece) {
        reply.data(request.cookie, 0, request.offset, content(request.offset, piece / 2));
        reply.error(request.cookie, DONE, 5, 'bad sector');
      } else {
        reply.data(request.cookie, DONE, request.offset, content(request.offset, request.length));
      }
    },
  });
  const client = await NbdClient.connect({ path });
  t.teardown(() => client.close());
  const memory = Buffer.alloc(16 * piece, GARBAGE);
  const results = await Promise.allSettled(Array.from({ length: 16 }, (_, i) => client.read(i * piece, piece, { into: memory, intoOffset: i * piece })));
  results.forEach((result, i) => {
    const own = memory.subarray(i * piece, (i + 1) * piece);
    if (i === 5) {
      t.is(result.status, 'rejected');
      t.is(((result as PromiseRejectedResult).reason as NbdError).code, 'EIO');
      // What it did receive stays inside its own range.
      t.true(own.subarray(0, piece / 2).equals(content(i * piece, piece / 2)));
    } else {
      t.is(result.status, 'fulfilled');
      t.true(own.equals(content(i * piece, piece)), `read ${i}`);
    }
  });
});

test('an into-read aborted while its payload arrives rejects, and nothing lands in its memory afterwards', async (t) => {
  const length = MiB;
  const pattern = Buffer.alloc(length, 0x5a);
  let stalledSocket: Socket | undefined;
  const { path } = await startFakeServer(t, {
    size: 16 * MiB,
    onRequest: (request, reply) => {
      if (request.offset !== 0) {
        reply.data(request.cookie, DONE, request.offset, Buffer.alloc(request.length, 0x11));
        return;
      }
      // The reply header and a first part of the payload, then the server stalls.
      const header = Buffer.alloc(28);
      header.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
      header.writeUInt16BE(DONE, 4);
      header.writeUInt16BE(REPLY.OFFSET_DATA, 6);
      request.cookie.copy(header, 8);
      header.writeUInt32BE(8 + length, 16);
      header.writeBigUInt64BE(0n, 20);
      reply.socket.write(Buffer.concat([header, pattern.subarray(0, 64 * 1024)]));
      stalledSocket = reply.socket;
    },
  });
  const client = await NbdClient.connect({ path, requestSize: length });
  t.teardown(() => client.close());
  const into = Buffer.alloc(length, GARBAGE);
  const abort = new AbortController();
  let settled = false;
  const reading = client.read(0, length, { into, signal: abort.signal }).finally(() => (settled = true));
  reading.catch(() => {});
  // Wait until the first part has arrived: the socket's next read now goes into `into`.
  for (let i = 0; i < 500 && into[0] !== 0x5a; i++) await new Promise((resolve) => setTimeout(resolve, 10));
  t.is(into[0], 0x5a);
  t.truthy(stalledSocket);
  abort.abort();
  // The socket may still write there; the caller hears of the abort once it has.
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.false(settled);
  stalledSocket!.write(pattern.subarray(64 * 1024));
  await t.throwsAsync(reading, { name: 'AbortError' });
  // From now on the memory is the caller's again.
  into.fill(0xaa);
  t.true((await client.read(MiB, 4096)).equals(Buffer.alloc(4096, 0x11)));
  t.true(into.equals(Buffer.alloc(length, 0xaa)));
});

test('a read sent to an idle connection lands straight in its memory, not in receive memory first', async (t) => {
  const { socket, expected } = await serveImage(t);
  const client = await NbdClient.connect({ path: socket, connections: 1 });
  t.teardown(() => client.close());
  // Where the first reply lands was settled during the handshake, before placement.
  await client.read(0, 4096);
  // Each request is answered before the next goes out: the connection is idle each time
  // Node asks where its next socket read lands, and the reply is one of a read not sent yet.
  for (let round = 0; round < 8; round++) {
    const offset = round * 512 * 1024;
    const target = Buffer.alloc(512 * 1024, GARBAGE);
    let copied = 0;
    const sink: PlacingReadSink = {
      holds: 'call',
      data(at, bytes) {
        const place = at - offset;
        if (bytes.buffer === target.buffer && bytes.byteOffset === target.byteOffset + place) return;
        copied += bytes.length;
        bytes.copy(target, place);
      },
      hole(at, size) {
        target.fill(0, at - offset, at - offset + size);
      },
      [PLACE](at, size) {
        return target.subarray(at - offset, at - offset + size);
      },
    };
    await client.readRequest(offset, target.length, sink);
    t.true(target.equals(expected.subarray(offset, offset + target.length)), `round ${round}: the bytes read`);
    // A payload's last few KiB may come through receive memory (reads that small are not
    // worth a placement of their own); the rest of it must not.
    t.true(copied < 16 * 1024, `round ${round}: ${copied} bytes came through receive memory`);
  }
});
