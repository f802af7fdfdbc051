// Writes a backup file in one sequential pass: qcow2 metadata first (see
// qcow2-layout), then the guest data of each stored cluster as it streams in
// from the NBD export. The native FileWriter checksums every byte in memory on
// its worker threads, so nothing is read back, and sends written ranges to the
// disk while the copy runs.
import { open, type FileHandle } from 'node:fs/promises';

import { openDirect } from '../../common/direct-io.js';

import type { ReadChunk } from '../../nbd/index.js';
import { nativeAddon, type NativeFileWriter } from '../../libvirt/native.js';
import { BatchedWrites, FLUSH_BYTES, WRITES_IN_FLIGHT } from './batched-writes.js';
import { COMPRESSION_TYPE_CODES, type ClusterCompression } from './cluster-compression.js';
import { planCompressedQcow2 } from './compressed-layout.js';
import { appendCompressedData } from './compressed-writer.js';
import {
  CLUSTER_SIZE,
  headerCluster,
  l1Table,
  metadataInTurns,
  planQcow2,
  refcountTable,
  type ClusterRun,
  type Qcow2Layout,
  type Qcow2LayoutInput,
} from './qcow2-layout.js';

export interface Qcow2WriteResult {
  fileSize: number;
  /** `xxh128:...` of the whole file, as stored in the manifest. */
  checksum: string;
  /** Guest bytes that came from the export as data (not holes, not padding). */
  dataBytes: number;
  /** Bytes the file holds: `fileSize` less the hole a compressed image leaves unwritten. */
  storedBytes: number;
}

export interface Qcow2WriteOptions {
  signal?: AbortSignal;
  onProgress?: (guestOffset: number) => void;
  /** Store the clusters compressed (those that shrink); see compressed-layout.ts. */
  compression?: ClusterCompression;
}

/**
 * Writes `path` (which must not exist) holding the clusters `input.runs`, filled
 * from `chunks`: data chunks in offset order covering (parts of) those runs;
 * anything inside a run that no data chunk covers is written as zeroes. A chunk's
 * `release()`, if it has one, is called once its bytes are written.
 */
export async function writeQcow2(
  path: string,
  input: Qcow2LayoutInput,
  chunks: AsyncIterable<ReadChunk>,
  options: Qcow2WriteOptions = {},
): Promise<Qcow2WriteResult> {
  const { compression } = options;
  const layout = compression ? planCompressedQcow2(input) : planQcow2(input);
  // A backup file is a copy of a VM's disk: private whatever the umask.
  const file = await open(path, 'wx', 0o600);
  await file.chmod(0o600).catch(async (error: unknown) => {
    await file.close();
    throw error;
  });
  // Data read into page-aligned memory (NBD chunks released by the consumer) goes
  // straight to the disk; metadata and anything unaligned through the page cache.
  const direct = compression ? null : await openDirect(file);
  const output = new BatchedWrites(new (nativeAddon().FileWriter)((direct ?? file).fd), path);
  try {
    let dataBytes: number;
    let storedBytes: number;
    if (compression) {
      for (const cluster of [headerCluster(layout, COMPRESSION_TYPE_CODES[compression]), l1Table(layout), refcountTable(layout)]) await output.append(cluster);
      ({ dataBytes, storedBytes } = await appendCompressedData(output, layout, compression, chunks, options));
    } else {
      for await (const cluster of metadataInTurns(layout)) await output.append(cluster);
      dataBytes = await appendStoredClusters(output, input.runs, chunks, options);
      storedBytes = layout.fileSize;
    }
    await output.drain();
    if (output.appended !== layout.fileSize) throw new Error(`wrote ${output.appended} bytes, the layout needs ${layout.fileSize}`);
    const checksum = `xxh128:${await output.finish()}`;
    // The hole at the end of a compressed image's data lies before its last writes: the file has its full size.
    return { fileSize: output.appended, checksum, dataBytes, storedBytes };
  } finally {
    await output.settle();
    await direct?.close();
    await file.close();
  }
}

/**
 * Appends the guest data of every stored cluster, in order: the chunks' bytes where
 * they cover a cluster, zeroes where none does. Returns the guest bytes that came as data.
 */
async function appendStoredClusters(
  output: BatchedWrites,
  runs: readonly ClusterRun[],
  chunks: AsyncIterable<ReadChunk>,
  options: { signal?: AbortSignal; onProgress?: (guestOffset: number) => void },
): Promise<number> {
  let dataBytes = 0;
  let runIndex = 0;
  // Guest offset of the next byte to write inside the current run.
  let cursor = runs.length > 0 ? runs[0]!.start * CLUSTER_SIZE : 0;
  // Guest offset just past the last data byte written: data must not go back before it.
  let dataEnd = 0;
  const runEnd = () => (runs[runIndex]!.start + runs[runIndex]!.count) * CLUSTER_SIZE;
  const finishRun = async () => {
    await output.appendZeroes(runEnd() - cursor);
    runIndex++;
    cursor = runIndex < runs.length ? runs[runIndex]!.start * CLUSTER_SIZE : Number.POSITIVE_INFINITY;
  };
  for await (const chunk of chunks) {
    options.signal?.throwIfAborted();
    if (chunk.kind !== 'data') continue;
    let offset = chunk.offset;
    let data = chunk.data.subarray(0, chunk.length);
    // Nothing of an empty chunk is written: its memory is free at once.
    if (data.length === 0) chunk.release?.();
    while (data.length > 0) {
      while (runIndex < runs.length && offset >= runEnd()) await finishRun();
      const runStart = runIndex < runs.length ? runs[runIndex]!.start * CLUSTER_SIZE : Number.POSITIVE_INFINITY;
      if (offset < dataEnd) throw new Error(`data at guest offset ${offset} arrived out of order`);
      if (offset < runStart) throw new Error(`data at guest offset ${offset} lies outside the planned clusters`);
      await output.appendZeroes(offset - cursor);
      const take = Math.min(data.length, runEnd() - offset);
      // The chunk's memory stays ours until its release (if any) runs after the write.
      if (take === data.length && chunk.release) output.releaseAfterWrite(chunk.release);
      await output.append(data.subarray(0, take));
      dataBytes += take;
      offset += take;
      cursor = offset;
      dataEnd = offset;
      data = data.subarray(take);
    }
    options.onProgress?.(offset);
  }
  while (runIndex < runs.length) await finishRun();
  return dataBytes;
}

/**
 * A qcow2 file with writeQcow2's layout whose guest data arrives in any order: for
 * sources read in their own order rather than the guest's (a restore streams each
 * chain file front to back). The metadata is written up front and the file sized to
 * the layout; each data write then lands where the layout puts its guest offset.
 * Bytes of a stored cluster that are never written read as zeroes (the file is sparse).
 */
export class Qcow2PositionedWriter {
  readonly layout: Qcow2Layout;
  readonly #writer: NativeFileWriter;
  /** First guest cluster of each run, ascending, and the host cluster it lands in. */
  readonly #runStart: Float64Array;
  readonly #runEnd: Float64Array;
  readonly #runHostCluster: Float64Array;

  private constructor(layout: Qcow2Layout, writer: NativeFileWriter) {
    this.layout = layout;
    this.#writer = writer;
    const runs = layout.input.runs;
    this.#runStart = new Float64Array(runs.length);
    this.#runEnd = new Float64Array(runs.length);
    this.#runHostCluster = new Float64Array(runs.length);
    let host = layout.dataOffset / CLUSTER_SIZE;
    runs.forEach((run, index) => {
      this.#runStart[index] = run.start;
      this.#runEnd[index] = run.start + run.count;
      this.#runHostCluster[index] = host;
      host += run.count;
    });
  }

  /**
   * Sizes `file` (empty, opened for writing) for `input` and writes its metadata.
   * `writeFd`: a descriptor of the same file to write through instead of `file`'s (one
   * opened with O_DIRECT, see binding/file_writer.h); the caller closes it.
   */
  static async create(file: FileHandle, input: Qcow2LayoutInput, options: { signal?: AbortSignal; writeFd?: number } = {}): Promise<Qcow2PositionedWriter> {
    const layout = planQcow2(input);
    await file.truncate(layout.fileSize);
    const writer = new (nativeAddon().FileWriter)(options.writeFd ?? file.fd);
    const self = new Qcow2PositionedWriter(layout, writer);
    const inFlight: Array<Promise<void>> = [];
    let position = 0;
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    const flush = async () => {
      if (pendingBytes === 0) return;
      const write = writer.write(pending, position);
      write.catch(() => undefined);
      inFlight.push(write);
      position += pendingBytes;
      pending = [];
      pendingBytes = 0;
      while (inFlight.length > WRITES_IN_FLIGHT) await inFlight.shift();
    };
    try {
      for await (const cluster of metadataInTurns(layout)) {
        options.signal?.throwIfAborted();
        pending.push(cluster);
        pendingBytes += cluster.length;
        if (pendingBytes >= FLUSH_BYTES) await flush();
      }
      await flush();
      while (inFlight.length > 0) await inFlight.shift();
    } finally {
      await Promise.allSettled(inFlight);
    }
    return self;
  }

  /**
   * Writes guest bytes at `guestOffset`, which must lie in clusters the layout stores.
   * The buffers must not change until the promise settles.
   */
  write(buffers: readonly Uint8Array[], guestOffset: number): Promise<void> {
    try {
      return this.#write(buffers, guestOffset);
    } catch (error) {
      // Not async on purpose (one promise per write on the hot path); a throw still becomes a rejection.
      return Promise.reject(error as Error);
    }
  }

  #write(buffers: readonly Uint8Array[], guestOffset: number): Promise<void> {
    // Split at run ends first, so a range outside the layout fails before anything is written.
    const segments: Array<{ pieces: Uint8Array[]; hostOffset: number }> = [];
    let offset = guestOffset;
    let room = 0; // bytes left in the current run
    for (let buffer of buffers) {
      while (buffer.length > 0) {
        if (room === 0) {
          const run = this.#runOf(offset);
          const hostCluster = this.#runHostCluster[run]! + Math.floor(offset / CLUSTER_SIZE) - this.#runStart[run]!;
          segments.push({ pieces: [], hostOffset: hostCluster * CLUSTER_SIZE + (offset % CLUSTER_SIZE) });
          room = this.#runEnd[run]! * CLUSTER_SIZE - offset;
        }
        const take = Math.min(room, buffer.length);
        segments.at(-1)!.pieces.push(take === buffer.length ? buffer : buffer.subarray(0, take));
        buffer = buffer.subarray(take);
        offset += take;
        room -= take;
      }
    }
    if (segments.length === 1) return this.#writer.write(segments[0]!.pieces, segments[0]!.hostOffset);
    return Promise.all(segments.map(({ pieces, hostOffset }) => this.#writer.write(pieces, hostOffset))).then(() => undefined);
  }

  /** After every write has settled: waits for write-back and fsyncs. */
  async finish(): Promise<{ fileSize: number }> {
    await this.#writer.finish();
    return { fileSize: this.layout.fileSize };
  }

  #runOf(guestOffset: number): number {
    const cluster = Math.floor(guestOffset / CLUSTER_SIZE);
    let low = 0;
    let high = this.#runStart.length - 1;
    while (low <= high) {
      const middle = (low + high) >>> 1;
      if (this.#runStart[middle]! <= cluster) low = middle + 1;
      else high = middle - 1;
    }
    if (high < 0 || cluster >= this.#runEnd[high]!) throw new Error(`guest offset ${guestOffset} lies outside the clusters this image stores`);
    return high;
  }
}
