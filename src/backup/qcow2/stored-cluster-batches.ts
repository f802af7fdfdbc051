// The stored clusters of an image, in guest order, as whole clusters gathered into
// batches: what compression works on. Bytes of a stored cluster that no data chunk
// covers read as zeroes. Each chunk's bytes are copied into the batch, so its
// `release()` runs as soon as they are. A batch's memory comes back through its own
// `release()` and is reused: fresh 1 MiB buffers would each cost the JS thread their
// page faults (and the collector its work).
import type { ReadChunk } from '../../nbd/index.js';
import { CLUSTER_SIZE, type ClusterRun } from './qcow2-layout.js';

export interface ClusterBatch {
  /** Guest cluster index of each cluster of `data`. */
  guestClusters: number[];
  /** `guestClusters.length` clusters, one after the other. */
  data: Buffer;
  /** Guest bytes in this batch that came as data. */
  dataBytes: number;
  /** Gives `data` back for a later batch, once nothing reads it any more. */
  release(): void;
}

/** Clusters per batch: one unit of compression work (1 MiB). */
export const BATCH_CLUSTERS = 16;

export async function* storedClusterBatches(
  runs: readonly ClusterRun[],
  chunks: AsyncIterable<ReadChunk>,
  options: { signal?: AbortSignal; onProgress?: (guestOffset: number) => void } = {},
): AsyncGenerator<ClusterBatch> {
  let runIndex = 0;
  // Guest cluster of the current slot (the next stored cluster not yet complete).
  let cluster = runs.length > 0 ? runs[0]!.start : Number.POSITIVE_INFINITY;
  const free: Buffer[] = [];
  const newBatch = (): ClusterBatch => {
    const data = free.pop()?.fill(0) ?? Buffer.alloc(BATCH_CLUSTERS * CLUSTER_SIZE);
    return { guestClusters: [], data, dataBytes: 0, release: () => void free.push(data) };
  };
  let batch = newBatch();
  // The current cluster already has its place in the batch (some of its data arrived).
  let slotOpen = false;
  let dataEnd = 0;
  // Moves past the current cluster; a full batch is handed back.
  const advance = (): ClusterBatch | null => {
    if (!slotOpen) batch.guestClusters.push(cluster);
    slotOpen = false;
    cluster++;
    const run = runs[runIndex]!;
    if (cluster >= run.start + run.count) {
      runIndex++;
      cluster = runIndex < runs.length ? runs[runIndex]!.start : Number.POSITIVE_INFINITY;
    }
    if (batch.guestClusters.length < BATCH_CLUSTERS) return null;
    const full = batch;
    batch = newBatch();
    return full;
  };
  for await (const chunk of chunks) {
    options.signal?.throwIfAborted();
    if (chunk.kind !== 'data') continue;
    let offset = chunk.offset;
    let data = chunk.data.subarray(0, chunk.length);
    if (offset < dataEnd) throw new Error(`data at guest offset ${offset} arrived out of order`);
    while (data.length > 0) {
      const target = Math.floor(offset / CLUSTER_SIZE);
      while (cluster < target) {
        const full = advance();
        if (full) yield full;
      }
      if (cluster !== target) throw new Error(`data at guest offset ${offset} lies outside the planned clusters`);
      if (!slotOpen) {
        batch.guestClusters.push(cluster);
        slotOpen = true;
      }
      const within = offset % CLUSTER_SIZE;
      const take = Math.min(data.length, CLUSTER_SIZE - within);
      data.copy(batch.data, (batch.guestClusters.length - 1) * CLUSTER_SIZE + within, 0, take);
      batch.dataBytes += take;
      offset += take;
      data = data.subarray(take);
      if (within + take === CLUSTER_SIZE) {
        const full = advance();
        if (full) yield full;
      }
    }
    dataEnd = offset;
    chunk.release?.();
    options.onProgress?.(offset);
  }
  while (runIndex < runs.length) {
    const full = advance();
    if (full) yield full;
  }
  if (batch.guestClusters.length > 0) yield batch;
  else batch.release();
}
