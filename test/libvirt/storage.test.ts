// Storage pools, volumes and streams against the real daemon: a sparse round trip
// whose bytes on the wire are counted, and the ways a transfer can go wrong.
import { createHash } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';

import test, { type ExecutionContext } from 'ava';

import { LibvirtError, StreamFlags, type StorageVolume, type VolumeChunk } from '../../src/index.js';
import { nativeAddon } from '../../src/libvirt/native.js';
import { connectSystem } from '../helpers/daemon.js';
import { run } from '../helpers/process.js';
import { createThrowawayPool } from '../helpers/storage-pool.js';

const MiB = 2 ** 20;

/** A connection and a throwaway pool of this test, both gone when it ends. */
async function poolOfTest(t: ExecutionContext, label: string) {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const { pool, cleanup } = await createThrowawayPool(conn, label);
  t.teardown(cleanup);
  return { conn, pool };
}

function pattern(length: number, seed: number): Buffer {
  const bytes = Buffer.alloc(length);
  for (let index = 0; index < length; index += 4096) bytes.fill((seed + index / 4096) % 251 || 1, index, index + 4096);
  return bytes;
}

/** 64 MiB: data at 0 and 40 MiB, holes elsewhere (also a trailing one). */
function sparseLayout(): VolumeChunk[] {
  return [
    { kind: 'data', data: pattern(3 * MiB, 7) },
    { kind: 'hole', length: 37 * MiB },
    { kind: 'data', data: pattern(5 * MiB + 4096, 11) },
    { kind: 'hole', length: 64 * MiB - 45 * MiB - 4096 },
  ];
}

/** The same bytes as one buffer, holes as zeroes. */
function flatten(chunks: readonly VolumeChunk[]): Buffer {
  return Buffer.concat(chunks.map((chunk) => (chunk.kind === 'data' ? chunk.data : Buffer.alloc(chunk.length))));
}

async function collect(volume: StorageVolume, options: Parameters<StorageVolume['download']>[0] = {}): Promise<VolumeChunk[]> {
  const chunks: VolumeChunk[] = [];
  for await (const chunk of volume.download(options)) chunks.push(chunk);
  return chunks;
}

/** Adjacent chunks of one kind merged: the stream may cut data anywhere. */
function normalise(chunks: readonly VolumeChunk[]): Array<{ kind: string; length: number; sha: string | null }> {
  const merged: VolumeChunk[] = [];
  for (const chunk of chunks) {
    const last = merged.at(-1);
    if (last?.kind === 'data' && chunk.kind === 'data') merged[merged.length - 1] = { kind: 'data', data: Buffer.concat([last.data, chunk.data]) };
    else if (last?.kind === 'hole' && chunk.kind === 'hole') merged[merged.length - 1] = { kind: 'hole', length: last.length + chunk.length };
    else merged.push(chunk);
  }
  return merged.map((chunk) =>
    chunk.kind === 'data'
      ? { kind: 'data', length: chunk.data.length, sha: createHash('sha256').update(chunk.data).digest('hex') }
      : { kind: 'hole', length: chunk.length, sha: null },
  );
}

test('a sparse upload sends only the data, the volume stays sparse, and a sparse download gives the same data and holes back', async (t) => {
  const { pool } = await poolOfTest(t, 'stream');
  const volume = await pool.createVolume({ name: 'disk.raw', capacity: 64 * MiB, format: 'raw' });
  const layout = sparseLayout();
  const progress: number[] = [];
  const sent = await volume.upload(layout, { onProgress: (totals) => progress.push(totals.dataBytes) });
  t.deepEqual(sent, { dataBytes: 8 * MiB + 4096, holeBytes: 56 * MiB - 4096 });
  t.is(progress.at(-1), 8 * MiB + 4096);

  // What libvirt and the file system say, not what we counted.
  const info = await run('virsh', ['-c', 'qemu:///system', 'vol-info', '--bytes', '--pool', pool.name, 'disk.raw']);
  const allocation = Number(/Allocation:\s+(\d+)/.exec(info)?.[1]);
  t.true(allocation >= 8 * MiB && allocation <= 9 * MiB, `allocation ${allocation}`);
  const path = await volume.getPath();
  t.true((await readFile(path)).equals(flatten(layout)));

  t.deepEqual(normalise(await collect(volume)), normalise(layout));
  // Not sparse: the holes arrive as zeroes.
  const dense = await collect(volume, { sparse: false, chunkBytes: 3 * MiB });
  t.true(dense.every((chunk) => chunk.kind === 'data'));
  t.true(flatten(dense).equals(flatten(layout)));
  // A range of the volume.
  const middle = await collect(volume, { offset: 2 * MiB, length: 2 * MiB });
  t.true(flatten(middle).equals(flatten(layout).subarray(2 * MiB, 4 * MiB)));
});

test('a dense upload sends holes as zeroes; small chunks are gathered and released once sent', async (t) => {
  const { pool } = await poolOfTest(t, 'dense');
  const volume = await pool.createVolume({ name: 'dense.raw', capacity: 4 * MiB, format: 'raw' });
  let released = 0;
  async function* source(): AsyncGenerator<VolumeChunk> {
    for (let index = 0; index < 512; index++) yield { kind: 'data', data: pattern(4096, index), release: () => released++ };
    yield { kind: 'hole', length: 2 * MiB };
  }
  const sent = await volume.upload(source(), { sparse: false });
  t.deepEqual(sent, { dataBytes: 4 * MiB, holeBytes: 0 });
  t.is(released, 512);
  const expected = Buffer.concat([...Array.from({ length: 512 }, (_, index) => pattern(4096, index)), Buffer.alloc(2 * MiB)]);
  t.true((await readFile(await volume.getPath())).equals(expected));
});

test('missing pools and volumes, and an existing volume, are LibvirtErrors naming them', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const missing = await t.throwsAsync(conn.lookupStoragePoolByName('lvbt-no-such-pool'), { instanceOf: LibvirtError });
  t.is(missing.codeName, 'VIR_ERR_NO_STORAGE_POOL');
  t.regex(missing.message, /lvbt-no-such-pool/);
  const { pool, cleanup } = await createThrowawayPool(conn, 'errors');
  t.teardown(cleanup);
  const noVolume = await t.throwsAsync(pool.lookupVolumeByName('absent.raw'), { instanceOf: LibvirtError });
  t.is(noVolume.codeName, 'VIR_ERR_NO_STORAGE_VOL');
  await pool.createVolume({ name: 'taken.raw', capacity: MiB, format: 'raw' });
  const exists = await t.throwsAsync(pool.createVolume({ name: 'taken.raw', capacity: MiB, format: 'raw' }), { instanceOf: LibvirtError });
  t.is(exists.codeName, 'VIR_ERR_STORAGE_VOL_EXIST');
  t.regex(exists.message, /taken\.raw/);
  t.deepEqual(
    (await pool.listAllVolumes()).map((volume) => volume.name),
    ['taken.raw'],
  );
  await t.throwsAsync(pool.createVolume({ name: 'a/b', capacity: 1 }), { message: /name: must not contain '\/'/ });
});

test('a source that fails halfway aborts the stream: the upload rejects with its error and the volume can be removed', async (t) => {
  const { pool } = await poolOfTest(t, 'abort');
  const volume = await pool.createVolume({ name: 'half.raw', capacity: 32 * MiB, format: 'raw' });
  async function* failing(): AsyncGenerator<VolumeChunk> {
    yield { kind: 'data', data: pattern(8 * MiB, 1) };
    yield { kind: 'data', data: pattern(8 * MiB, 2) };
    throw new Error('source broke');
  }
  await t.throwsAsync(volume.upload(failing()), { message: 'source broke' });
  const controller = new AbortController();
  async function* endless(): AsyncGenerator<VolumeChunk> {
    for (let index = 0; ; index++) {
      if (index === 2) controller.abort(new Error('stopped by the caller'));
      yield { kind: 'data', data: pattern(MiB, index) };
    }
  }
  await t.throwsAsync(volume.upload(endless(), { signal: controller.signal }), { message: 'stopped by the caller' });
  await t.throwsAsync(volume.upload([{ kind: 'data', data: 'text' } as unknown as VolumeChunk]), { instanceOf: TypeError, message: /chunk 0 must be/ });
  // More data than the range announced is the daemon's to refuse; the stream is aborted all the same.
  // On a connection of its own: after such a refusal libvirt 9.0's client now and then
  // drops its connection (about once in a hundred on a loaded machine: the daemon logs
  // end of file right after the refusal), which would fail the rest of this test for a
  // reason that is libvirt's.
  const other = await connectSystem();
  t.teardown(() => other.close().catch(() => undefined));
  const sameVolume = await (await other.lookupStoragePoolByName(pool.name)).lookupVolumeByName('half.raw');
  const tooLong = await t.throwsAsync(sameVolume.upload([{ kind: 'data', data: Buffer.alloc(2 * MiB) }], { length: MiB }), { instanceOf: LibvirtError });
  t.is(tooLong.codeName, 'VIR_ERR_SYSTEM_ERROR');
  t.regex(tooLong.message, /cannot write to stream/);
  // libvirt holds no part of the aborted transfers: the volume goes, and the pool is usable.
  await volume.delete();
  t.deepEqual(await pool.listAllVolumes(), []);
  const again = await pool.createVolume({ name: 'half.raw', capacity: MiB, format: 'raw' });
  t.deepEqual(await again.upload([{ kind: 'data', data: pattern(MiB, 3) }]), { dataBytes: MiB, holeBytes: 0 });
});

test('a download fills released chunks again, and never a chunk still held', async (t) => {
  const { pool } = await poolOfTest(t, 'reuse');
  const volume = await pool.createVolume({ name: 'reuse.raw', capacity: 32 * MiB, format: 'raw' });
  await volume.upload([{ kind: 'data', data: pattern(32 * MiB, 7) }]);
  const released = new Set<ArrayBufferLike>();
  const pieces: Buffer[] = [];
  for await (const chunk of volume.download({ chunkBytes: MiB })) {
    if (chunk.kind !== 'data') continue;
    pieces.push(Buffer.from(chunk.data));
    released.add(chunk.data.buffer);
    chunk.release!();
    chunk.release!();
  }
  t.true(Buffer.concat(pieces).equals(pattern(32 * MiB, 7)), 'the bytes, each copied before its chunk was released');
  t.true(pieces.length >= 32, `${pieces.length} chunks`);
  t.true(released.size <= 3, `${released.size} pieces of memory served ${pieces.length} chunks`);
  // Held chunks are never filled again: each keeps its bytes to the end.
  const held = (await collect(volume, { chunkBytes: MiB })).filter((chunk) => chunk.kind === 'data');
  t.is(new Set(held.map((chunk) => chunk.data.buffer)).size, held.length);
  t.true(flatten(held).equals(pattern(32 * MiB, 7)));
  await volume.delete();
});

test('a download stopped early aborts its stream; the volume stays usable', async (t) => {
  const { pool } = await poolOfTest(t, 'early');
  const volume = await pool.createVolume({ name: 'early.raw', capacity: 16 * MiB, format: 'raw' });
  await volume.upload([{ kind: 'data', data: pattern(16 * MiB, 5) }]);
  for await (const chunk of volume.download({ chunkBytes: MiB })) {
    t.is(chunk.kind, 'data');
    break;
  }
  const controller = new AbortController();
  controller.abort(new Error('not wanted'));
  await t.throwsAsync(collect(volume, { signal: controller.signal }), { message: 'not wanted' });
  t.true(flatten(await collect(volume)).equals(pattern(16 * MiB, 5)));
  await volume.delete();
});

test('after close, streams, pools and volumes reject with VIR_ERR_INVALID_CONN; an upload in flight fails instead of hanging', async (t) => {
  const conn = await connectSystem();
  const { pool, path } = await createThrowawayPool(conn, 'close');
  const helper = await connectSystem();
  t.teardown(async () => {
    const again = await helper.lookupStoragePoolByName(pool.name);
    for (const volume of await again.listAllVolumes()) await volume.delete();
    await again.destroy();
    await rm(path, { recursive: true, force: true });
    await helper.close();
  });
  const volume = await pool.createVolume({ name: 'closing.raw', capacity: 256 * MiB, format: 'raw' });
  let yielded = 0;
  async function* slow(): AsyncGenerator<VolumeChunk> {
    for (let index = 0; index < 32; index++) {
      yielded++;
      if (index === 2) void conn.close();
      yield { kind: 'data', data: pattern(8 * MiB, index) };
    }
  }
  const failure = await t.throwsAsync(volume.upload(slow()), { instanceOf: LibvirtError });
  t.is(failure.codeName, 'VIR_ERR_INVALID_CONN');
  t.true(yielded < 32);
  t.throws(() => conn.newStream(), { instanceOf: LibvirtError, message: /closed/ });
  await t.throwsAsync(pool.lookupVolumeByName('closing.raw'), { instanceOf: LibvirtError, message: /closed/ });
  await t.throwsAsync(volume.getInfo(), { instanceOf: LibvirtError, message: /closed/ });
});

test('wrong arguments are TypeErrors before libvirt is called', async (t) => {
  const { conn, pool } = await poolOfTest(t, 'args');
  const volume = await pool.createVolume({ name: 'args.raw', capacity: MiB, format: 'raw' });
  t.throws(() => conn.newStream(StreamFlags.NONBLOCK), { instanceOf: TypeError, message: /non-blocking/ });
  await t.throwsAsync(volume.upload([], { offset: -1 }), { instanceOf: TypeError, message: /"offset"/ });
  await t.throwsAsync(volume.upload([], { length: 1.5 }), { instanceOf: TypeError, message: /"length"/ });

  const addon = nativeAddon();
  const native = await addon.open('qemu:///system', 0);
  t.teardown(() => native.close());
  const other = await addon.open('qemu:///system', 0);
  t.teardown(() => other.close());
  const nativeVolume = await (await native.lookupStoragePoolByName(pool.name)).lookupVolumeByName('args.raw');
  const stream = native.newStream(0);
  const loose = stream as unknown as Record<string, (...args: unknown[]) => unknown>;
  t.throws(() => loose.send!.call(stream, 'bytes'), { instanceOf: TypeError, message: /"buffers"/ });
  t.throws(() => loose.send!.call(stream, [1, 2]), { instanceOf: TypeError, message: /"buffers"/ });
  t.throws(() => loose.recv!.call(stream, new Uint8Array(0)), { instanceOf: TypeError, message: /must not be empty/ });
  t.throws(() => loose.sendHole!.call(stream, -1), { instanceOf: TypeError, message: /"length"/ });
  t.throws(() => loose.recv!.call({}, new Uint8Array(1)), { instanceOf: TypeError, message: /receiver is not a Stream/ });
  // A stream of another connection cannot carry this volume's data.
  const looseVolume = nativeVolume as unknown as Record<string, (...args: unknown[]) => unknown>;
  t.throws(() => looseVolume.upload!.call(nativeVolume, other.newStream(0), 0, 0, 0), { instanceOf: TypeError, message: /"stream"/ });
  t.throws(() => looseVolume.upload!.call(nativeVolume, {}, 0, 0, 0), { instanceOf: TypeError, message: /"stream"/ });
  for (const name of ['StoragePool', 'StorageVolume', 'Stream'] as const) {
    const Ctor = addon[name] as unknown as new (...args: unknown[]) => unknown;
    t.throws(() => new Ctor(), { instanceOf: TypeError, message: /Illegal constructor/ }, name);
    t.throws(() => new Ctor({}, {}), { instanceOf: TypeError, message: /Illegal constructor/ }, name);
  }
});

test('streams dropped in the middle of a transfer are aborted when collected; nothing crashes and the connection goes on', async (t) => {
  const { pool } = await poolOfTest(t, 'gc');
  const addon = nativeAddon();
  const native = await addon.open('qemu:///system', 0);
  t.teardown(() => native.close());
  const nativePool = await native.lookupStoragePoolByName(pool.name);
  for (let index = 0; index < 4; index++) {
    const volume = await nativePool.createVolume(`<volume><name>gc-${index}.raw</name><capacity>${MiB}</capacity></volume>`, 0);
    const stream = native.newStream(0);
    await volume.upload(stream, 0, 0, 0);
    await stream.send([Buffer.alloc(64 * 1024, index + 1)]);
    // Neither finished nor aborted: left to the garbage collector.
  }
  for (let round = 0; round < 3; round++) {
    globalThis.gc?.();
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  t.is((await pool.listAllVolumes()).length, 4);
  for (const volume of await pool.listAllVolumes()) await volume.delete();
  t.deepEqual(await pool.listAllVolumes(), []);
  t.true(await native.isAlive());
});
