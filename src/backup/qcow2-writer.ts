// Writes a backup file in one sequential pass: qcow2 metadata first (see
// qcow2-layout), then the guest data of each stored cluster as it streams in
// from the NBD export. The native FileWriter checksums every byte in memory on
// its worker threads, so nothing is read back, and sends written ranges to the
// disk while the copy runs.
import { open } from 'node:fs/promises';

import type { ReadChunk } from '../nbd/index.js';
import { nativeAddon } from '../native.js';
import { CLUSTER_SIZE, metadataClusters, planQcow2, type ClusterRun, type Qcow2LayoutInput } from './qcow2-layout.js';

export interface Qcow2WriteResult {
  fileSize: number;
  /** `xxh128:...` of the whole file, as stored in the manifest. */
  checksum: string;
  /** Guest bytes that came from the export as data (not holes, not padding). */
  dataBytes: number;
}

const ZEROES = Buffer.alloc(CLUSTER_SIZE * 16);
const FLUSH_BYTES = 8 * 2 ** 20;
const WRITES_IN_FLIGHT = 4;

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
  options: { signal?: AbortSignal; onProgress?: (guestOffset: number) => void } = {},
): Promise<Qcow2WriteResult> {
  const layout = planQcow2(input);
  // A backup file is a copy of a VM's disk: private whatever the umask.
  const file = await open(path, 'wx', 0o600);
  await file.chmod(0o600).catch(async (error: unknown) => {
    await file.close();
    throw error;
  });
  const writer = new (nativeAddon().FileWriter)(file.fd);
  let written = 0;
  let dataBytes = 0;
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  // Receive memory of the pending pieces, given back once their write has landed.
  let pendingReleases: Array<() => void> = [];
  // Positioned writes run a few at a time on the thread pool.
  const inFlight: Array<Promise<unknown>> = [];
  let issued = 0;
  const flush = async () => {
    if (pendingBytes === 0) return;
    const pieces = pending;
    const releases = pendingReleases;
    const position = issued;
    const length = pendingBytes;
    issued += length;
    pending = [];
    pendingBytes = 0;
    pendingReleases = [];
    const done = writer.write(pieces, position).then(
      () => {
        for (const release of releases) release();
      },
      (error: NodeJS.ErrnoException) => {
        throw Object.assign(new Error(`writing ${length} bytes at ${position} of ${path}: ${error.message}`, { cause: error }), { code: error.code });
      },
    );
    done.catch(() => undefined);
    inFlight.push(done);
    while (inFlight.length > WRITES_IN_FLIGHT) await inFlight.shift();
  };
  const emit = async (bytes: Buffer) => {
    pending.push(bytes);
    pendingBytes += bytes.length;
    written += bytes.length;
    if (pendingBytes >= FLUSH_BYTES) await flush();
  };
  const zeroes = async (length: number) => {
    for (let left = length; left > 0; left -= ZEROES.length) await emit(ZEROES.subarray(0, Math.min(left, ZEROES.length)));
  };
  try {
    for (const cluster of metadataClusters(layout)) await emit(cluster);

    const runs: readonly ClusterRun[] = input.runs;
    let runIndex = 0;
    // Guest offset of the next byte to write inside the current run.
    let cursor = runs.length > 0 ? runs[0]!.start * CLUSTER_SIZE : 0;
    const runEnd = () => (runs[runIndex]!.start + runs[runIndex]!.count) * CLUSTER_SIZE;
    const finishRun = async () => {
      await zeroes(runEnd() - cursor);
      runIndex++;
      cursor = runIndex < runs.length ? runs[runIndex]!.start * CLUSTER_SIZE : Number.POSITIVE_INFINITY;
    };
    for await (const chunk of chunks) {
      options.signal?.throwIfAborted();
      if (chunk.kind !== 'data') continue;
      let offset = chunk.offset;
      let data = chunk.data.subarray(0, chunk.length);
      while (data.length > 0) {
        while (runIndex < runs.length && offset >= runEnd()) await finishRun();
        if (runIndex >= runs.length) throw new Error(`data at guest offset ${offset} lies outside the planned clusters`);
        const runStart = runs[runIndex]!.start * CLUSTER_SIZE;
        if (offset < Math.max(cursor, runStart)) throw new Error(`data at guest offset ${offset} arrived out of order`);
        await zeroes(offset - cursor);
        const take = Math.min(data.length, runEnd() - offset);
        // The chunk's memory stays ours until its release (if any) runs after the write.
        if (take === data.length && chunk.release) pendingReleases.push(chunk.release);
        await emit(data.subarray(0, take));
        dataBytes += take;
        offset += take;
        cursor = offset;
        data = data.subarray(take);
      }
      options.onProgress?.(offset);
    }
    while (runIndex < runs.length) await finishRun();
    await flush();
    while (inFlight.length > 0) await inFlight.shift();
    if (written !== layout.fileSize) throw new Error(`wrote ${written} bytes, the layout needs ${layout.fileSize}`);
    const checksum = `xxh128:${await writer.finish()}`;
    return { fileSize: written, checksum, dataBytes };
  } finally {
    await Promise.allSettled(inFlight);
    await file.close();
  }
}
