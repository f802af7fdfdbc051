// Compressed images from our one-pass writer, judged by qemu-img (check, compare,
// compression type, which clusters are compressed) and read back by our own reader:
// zstd and zlib, full and on a backing file, mixed with plain images in one chain.
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import test, { type ExecutionContext } from 'ava';

import { compressClusters, decompressCluster, type ClusterCompression } from '../../src/backup/qcow2/cluster-compression.js';
import { clusterRuns, CLUSTER_SIZE } from '../../src/backup/qcow2/qcow2-layout.js';
import { inflateCluster } from '../../src/backup/qcow2/qcow2-reader.js';
import { writeQcow2, type Qcow2WriteResult } from '../../src/backup/qcow2/qcow2-writer.js';
import type { ReadChunk } from '../../src/nbd/index.js';
import { run } from '../helpers/process.js';
import { MiB, KiB, imageInfo, qemuImg, qemuImgCheckClean, qemuImgCompare, restorePaths } from './qcow2-helpers.js';

const SIZE = 700 * MiB;

interface Piece {
  offset: number;
  data: Buffer;
}

async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'lvb-qcow2c-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function* chunksOf(pieces: readonly Piece[]): AsyncGenerator<ReadChunk> {
  for (const { offset, data } of pieces) yield { kind: 'data', offset, length: data.length, data };
}

/** Writes `pieces` as an image (on `backing`, whose contents `reference` already holds) and applies them to `reference`. */
async function writeImage(
  path: string,
  pieces: readonly Piece[],
  reference: Buffer,
  options: { compression?: ClusterCompression; backing?: string } = {},
): Promise<Qcow2WriteResult> {
  for (const { offset, data } of pieces) data.copy(reference, offset);
  const input = {
    virtualSize: SIZE,
    runs: clusterRuns(pieces.map(({ offset, data }) => ({ offset, length: data.length }))),
    ...(options.backing ? { backingFile: options.backing, backingFormat: 'qcow2' } : {}),
  };
  return writeQcow2(path, input, chunksOf(pieces), { compression: options.compression });
}

/** Compressible text, an incompressible cluster, a partial cluster, pieces in three L2 ranges. */
function fullPieces(): Piece[] {
  return [
    { offset: 0, data: Buffer.alloc(100 * KiB, 'abcdefgh12345678') },
    { offset: 1000 * KiB, data: randomBytes(3000) },
    { offset: 2 * MiB, data: Buffer.concat([Buffer.alloc(64 * KiB, 'x'), randomBytes(CLUSTER_SIZE), Buffer.alloc(64 * KiB, 'hello world ')]) },
    { offset: 520 * MiB, data: Buffer.alloc(3 * MiB, 'the quick brown fox ') },
    { offset: 699 * MiB, data: Buffer.alloc(MiB, 0x44) },
  ];
}

/** Whole clusters, as an incremental copies them (a stored cluster replaces its backing file's). */
function incrementalPieces(): Piece[] {
  return [
    { offset: 64 * KiB, data: Buffer.alloc(64 * KiB, 'second ') },
    { offset: 2 * MiB + 64 * KiB, data: randomBytes(128 * KiB) },
    { offset: 600 * MiB, data: Buffer.alloc(512 * KiB, 'later ') },
  ];
}

async function assertImage(t: ExecutionContext, dir: string, path: string, reference: Buffer, result: Qcow2WriteResult): Promise<void> {
  const check = await qemuImgCheckClean(path);
  t.true(check.clean, check.report);
  const raw = join(dir, 'reference.raw');
  await writeFile(raw, reference);
  const compared = await qemuImgCompare(path, raw);
  t.true(compared.identical, compared.message);
  // The checksum is the one xxhsum computes from the file on disk, hole included.
  t.is(result.checksum, `xxh128:${(await run('xxhsum', ['-H2', path])).split(/\s/)[0]}`);
  const file = await stat(path);
  t.is(file.size, result.fileSize);
  // The room left for clusters that did shrink stays a hole: the file takes about its stored bytes.
  t.true(file.blocks * 512 < result.storedBytes + 256 * KiB, `${file.blocks * 512} bytes allocated, ${result.storedBytes} stored`);
}

for (const compression of ['zstd', 'zlib'] as const) {
  test(`${compression}: a full image is clean and identical for qemu-img, smaller, with the incompressible cluster plain`, async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, 'full.qcow2');
    const reference = Buffer.alloc(SIZE);
    const result = await writeImage(path, fullPieces(), reference, { compression });
    await assertImage(t, dir, path, reference, result);
    const info = (await imageInfo(path)) as { 'format-specific': { data: Record<string, unknown> } };
    t.is(info['format-specific'].data['compression-type'], compression);
    const check = JSON.parse(await qemuImg('check', '--output=json', path)) as { 'compressed-clusters': number; 'allocated-clusters': number };
    // 2 + 1 + 3 + 48 + 16 stored clusters; only the random one does not shrink.
    t.is(check['allocated-clusters'], 70);
    t.is(check['compressed-clusters'], 69);
    const map = JSON.parse(await qemuImg('map', '--output=json', path)) as Array<{ start: number; offset?: number }>;
    t.deepEqual(
      map.filter((entry) => entry.offset !== undefined).map((entry) => entry.start),
      [2 * MiB + CLUSTER_SIZE],
    );
    t.true(result.storedBytes < 700 * KiB, `${result.storedBytes} bytes stored`);
    // Our own reader restores what qemu-img sees.
    const restored = join(dir, 'restored.raw');
    await restorePaths([path], restored, { format: 'raw', qemuImgFallback: false });
    t.true((await readFile(restored)).equals(reference));
  });

  test(`${compression}: compressed and plain images mix in one chain; qemu-img and our reader read every point`, async (t) => {
    const dir = await tempDir(t);
    const reference = Buffer.alloc(SIZE);
    const full = join(dir, 'full.qcow2');
    await writeImage(full, fullPieces(), reference, {});
    const afterFull = Buffer.from(reference);
    const inc1 = join(dir, 'inc1.qcow2');
    const result1 = await writeImage(inc1, incrementalPieces(), reference, { compression, backing: 'full.qcow2' });
    const afterInc1 = Buffer.from(reference);
    const inc2 = join(dir, 'inc2.qcow2');
    const result2 = await writeImage(inc2, [{ offset: 520 * MiB, data: randomBytes(2 * CLUSTER_SIZE) }], reference, { backing: 'inc1.qcow2' });
    await assertImage(t, dir, inc2, reference, result2);
    const points: Array<[string[], Buffer]> = [
      [[full], afterFull],
      [[full, inc1], afterInc1],
      [[full, inc1, inc2], reference],
    ];
    for (const [chain, expected] of points) {
      const restored = join(dir, `restored-${chain.length}.raw`);
      await restorePaths(chain, restored, { format: 'raw', qemuImgFallback: false });
      t.true((await readFile(restored)).equals(expected), `restore of ${chain.length} files`);
      // qemu-img convert of the chain gives the same bytes.
      const converted = join(dir, `converted-${chain.length}.raw`);
      await qemuImg('convert', '-f', 'qcow2', '-O', 'raw', chain.at(-1)!, converted);
      t.true((await readFile(converted)).equals(expected), `qemu-img convert of ${chain.length} files`);
    }
    t.true((await qemuImgCheckClean(inc1)).clean);
    t.true(result1.storedBytes < result1.fileSize);
  });
}

test('zstd and zlib: a cluster that does not shrink gets length 0, others round-trip with trailing bytes after the stream', async (t) => {
  const text = Buffer.alloc(CLUSTER_SIZE, 'compressible ');
  const noise = randomBytes(CLUSTER_SIZE);
  for (const compression of ['zstd', 'zlib'] as const) {
    const output = Buffer.alloc(2 * CLUSTER_SIZE);
    const [packed, plain] = await compressClusters(compression, [text, noise], output);
    t.is(plain, 0, compression);
    t.true(packed! > 0 && packed! < CLUSTER_SIZE);
    // qcow2 rounds a stream up to whole sectors: whatever follows it is not part of it.
    const followed = Buffer.concat([output.subarray(0, packed), randomBytes(700)]);
    t.true((await decompressCluster(compression, followed, CLUSTER_SIZE)).equals(text), compression);
  }
});

test('a damaged compressed cluster is refused as a broken chain, naming where it lies', async (t) => {
  const output = Buffer.alloc(CLUSTER_SIZE);
  const [packed] = await compressClusters('zstd', [Buffer.alloc(CLUSTER_SIZE, 'abc')], output);
  const cut = output.subarray(0, packed! - 4);
  const error = await t.throwsAsync(inflateCluster(cut, CLUSTER_SIZE, () => 'x.qcow2: compressed cluster at 4096', 'zstd'));
  t.is((error as { code?: string }).code, 'CHAIN_BROKEN');
  t.regex(error!.message, /x\.qcow2: compressed cluster at 4096 is not a valid zstd frame/);
  const garbage = await t.throwsAsync(inflateCluster(randomBytes(600), CLUSTER_SIZE, () => 'y', 'zlib'));
  t.regex(garbage!.message, /y is not a valid deflate stream/);
});
