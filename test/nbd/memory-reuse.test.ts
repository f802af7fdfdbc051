// Receive memory is reused only where no holder can still see it: chunks kept by a
// default stream stay intact, and a `reuseMemory` stream reads correct bytes while
// cycling through a little memory instead of fresh memory for every read.
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { NbdClient, type ReadChunk } from '../../src/nbd/index.js';
import { startQemuNbd, tempDir } from './helpers.js';

const MiB = 1024 * 1024;
const SIZE = 48 * MiB;

/** Bytes of distinct receive memory seen. */
const bytesOf = (memory: Set<ArrayBufferLike>): number => [...memory].reduce((sum, buffer) => sum + buffer.byteLength, 0);

async function serveRandom(t: ExecutionContext): Promise<{ socket: string; expected: Buffer }> {
  const dir = await tempDir(t);
  const expected = randomBytes(SIZE);
  const image = join(dir, 'random.raw');
  await writeFile(image, expected);
  const socket = join(dir, 'nbd.sock');
  await startQemuNbd(t, { path: socket }, ['--read-only', '-f', 'raw', image]);
  return { socket, expected };
}

test('chunks kept by a default stream are never overwritten', async (t) => {
  const { socket, expected } = await serveRandom(t);
  const client = await NbdClient.connect({ path: socket, requestSize: 256 * 1024 });
  t.teardown(() => client.close());
  const kept: ReadChunk[] = [];
  for await (const chunk of client.chunks()) kept.push(chunk);
  // Reads made after the stream share the connections' receive memory.
  t.true((await client.read(0, SIZE)).equals(expected));
  const rebuilt = Buffer.concat(kept.map((chunk) => (chunk.kind === 'data' ? chunk.data : Buffer.alloc(chunk.length))));
  t.true(rebuilt.equals(expected));
});

test('a reuseMemory stream reads the right bytes from a few recycled slabs', async (t) => {
  const { socket, expected } = await serveRandom(t);
  const client = await NbdClient.connect({ path: socket });
  t.teardown(() => client.close());
  await client.ready();
  for (let pass = 0; pass < 2; pass++) {
    const memory = new Set<ArrayBufferLike>();
    let next = 0;
    for await (const chunk of client.chunks({ reuseMemory: true })) {
      t.is(chunk.offset, next);
      next += chunk.length;
      if (chunk.kind !== 'data') continue;
      memory.add(chunk.data.buffer);
      if (!chunk.data.equals(expected.subarray(chunk.offset, chunk.offset + chunk.length))) {
        t.fail(`pass ${pass}: wrong bytes at ${chunk.offset}+${chunk.length}`);
        return;
      }
    }
    t.is(next, SIZE);
    // Fresh memory would be all 48 MiB. The connections share one pool of small slabs,
    // so what they touch stays under twice the 4 MiB in flight (per-connection pools of
    // 1 MiB slabs touched 8-12 MiB).
    t.true(bytesOf(memory) < 8 * MiB, `${bytesOf(memory) / MiB} MiB of distinct memory for ${SIZE / MiB} MiB read`);
  }
  // Plain reads on the same connections are unaffected.
  t.true((await client.read(5 * MiB + 3, 3 * MiB)).equals(expected.subarray(5 * MiB + 3, 8 * MiB + 3)));
});

test('an until-release stream reads into page-aligned memory, keeps each chunk intact until it is released, then reuses it', async (t) => {
  const { socket, expected } = await serveRandom(t);
  const client = await NbdClient.connect({ path: socket });
  t.teardown(() => client.close());
  await client.ready();
  const held: Array<Extract<ReadChunk, { kind: 'data' }>> = [];
  const memory = new Set<ArrayBufferLike>();
  let first: (typeof held)[number] | undefined;
  let next = 0;
  for await (const chunk of client.chunks({ reuseMemory: 'until-release' })) {
    t.is(chunk.offset, next);
    next += chunk.length;
    if (chunk.kind !== 'data') continue;
    if (typeof chunk.release !== 'function') return t.fail('a data chunk without release()');
    first ??= chunk;
    memory.add(chunk.data.buffer);
    // Each read lands in memory of its own that starts on a page (what O_DIRECT writes take).
    if (chunk.offset % client.requestSize === 0 && chunk.data.byteOffset % 4096 !== 0) return t.fail(`chunk at ${chunk.offset} is not page-aligned`);
    held.push(chunk);
    // Hold 16 MiB at a time, like a writer with writes in flight, and check what was held.
    const heldBytes = held.reduce((sum, c) => sum + c.length, 0);
    if (heldBytes >= 16 * MiB) {
      for (const c of held) {
        if (!c.data.equals(expected.subarray(c.offset, c.offset + c.length))) return t.fail(`held chunk at ${c.offset} was overwritten`);
        c.release!();
      }
      held.length = 0;
    }
  }
  for (const c of held) {
    t.true(c.data.equals(expected.subarray(c.offset, c.offset + c.length)));
    c.release!();
  }
  t.is(next, SIZE);
  // Released memory came back into use: well under what was read, with 16 MiB held.
  t.true(bytesOf(memory) < SIZE / 2, `${bytesOf(memory) / MiB} MiB of distinct memory for ${SIZE / MiB} MiB read`);
  t.throws(() => first!.release!(), { message: 'a read chunk was released twice' });
});

test('until-release streams read into the memory a caller gives; streams given the same source share its buffers', async (t) => {
  const { socket, expected } = await serveRandom(t);
  const client = await NbdClient.connect({ path: socket });
  t.teardown(() => client.close());
  const given: ArrayBuffer[] = [];
  const alignedMemory = (bytes: number): ArrayBuffer => {
    const memory = new ArrayBuffer(bytes);
    given.push(memory);
    return memory;
  };
  // Four ranges, one stream each, as a backup reads the runs of a disk.
  for (let range = 0; range < 4; range++) {
    const offset = range * 12 * MiB;
    for await (const chunk of client.chunks({ range: { offset, length: 8 * MiB }, reuseMemory: 'until-release', alignedMemory })) {
      if (chunk.kind !== 'data') continue;
      if (!given.includes(chunk.data.buffer as ArrayBuffer)) return t.fail(`chunk at ${chunk.offset} is not in the given memory`);
      if (!chunk.data.equals(expected.subarray(chunk.offset, chunk.offset + chunk.length))) return t.fail(`wrong bytes at ${chunk.offset}`);
      chunk.release!();
    }
  }
  // Released at once, the first stream's buffers served the three after it.
  t.is(given.length, 2, `${given.length} memories given for 32 MiB read in four streams`);
  // Without a source of its own, a stream still reads into page-aligned memory.
  for await (const chunk of client.chunks({ range: { offset: 0, length: MiB }, reuseMemory: 'until-release' })) {
    if (chunk.kind !== 'data') continue;
    t.false(given.includes(chunk.data.buffer as ArrayBuffer));
    chunk.release!();
  }
});
