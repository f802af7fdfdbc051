// The data and trailing metadata of a compressed image (compressed-layout.ts): stored
// clusters are compressed a batch at a time off the JS thread, a few batches at once,
// and appended in guest order as they come back: a compressed cluster packed right
// after the previous one, a cluster that did not shrink plain at the next cluster
// boundary. Where each landed is noted in the L2 tables and refcounts, written once the
// data is done. Memory: the batches in flight and their compressed output (both
// reused), the L2 tables (64 KiB per 512 MiB of guest range with data) and a 2-byte
// refcount per cluster of room.
import type { ReadChunk } from '../../nbd/index.js';
import type { BatchedWrites } from './batched-writes.js';
import { compressClusters, type ClusterCompression } from './cluster-compression.js';
import { CLUSTER_BITS, CLUSTER_SIZE, COPIED, L2_ENTRIES, REFCOUNTS_PER_BLOCK, type Qcow2Layout } from './qcow2-layout.js';
import { BATCH_CLUSTERS, storedClusterBatches, type ClusterBatch } from './stored-cluster-batches.js';

/** Batches being compressed at once: enough to keep both cores busy while one is written. */
const BATCHES_IN_FLIGHT = 4;
const SECTOR = 512;
const COMPRESSED = 1n << 62n;
/** qcow2's compressed cluster descriptor: offset below bit 62 - (cluster_bits - 8), then the extra sectors. */
const SECTORS_SHIFT = BigInt(62 - (CLUSTER_BITS - 8));

export interface CompressedDataResult {
  dataBytes: number;
  /** Bytes the file holds apart from its hole. */
  storedBytes: number;
}

/** Where each stored cluster landed, as L2 entries and refcounts. */
class Placement {
  /** File offset of the next data byte. */
  position: number;
  readonly #l2Tables = new Map<number, Buffer>();
  readonly #refcounts: Uint16Array;

  constructor(readonly layout: Qcow2Layout) {
    this.position = layout.dataOffset;
    this.#refcounts = new Uint16Array(layout.dataClusters);
  }

  #entry(guestCluster: number, value: bigint): void {
    const index = Math.floor(guestCluster / L2_ENTRIES);
    let table = this.#l2Tables.get(index);
    if (!table) {
      table = Buffer.alloc(CLUSTER_SIZE);
      this.#l2Tables.set(index, table);
    }
    table.writeBigUInt64BE(value, (guestCluster % L2_ENTRIES) * 8);
  }

  #count(fromByte: number, toByte: number): void {
    const first = Math.floor((fromByte - this.layout.dataOffset) / CLUSTER_SIZE);
    const last = Math.floor((toByte - 1 - this.layout.dataOffset) / CLUSTER_SIZE);
    for (let cluster = first; cluster <= last; cluster++) this.#refcounts[cluster]!++;
  }

  /** A compressed stream of `length` bytes at `position`; QEMU counts the whole sectors it spans. */
  compressed(guestCluster: number, length: number): void {
    const start = this.position;
    const extraSectors = Math.floor((start + length - 1) / SECTOR) - Math.floor(start / SECTOR);
    this.#entry(guestCluster, COMPRESSED | (BigInt(extraSectors) << SECTORS_SHIFT) | BigInt(start));
    const firstSector = start - (start % SECTOR);
    this.#count(firstSector, firstSector + (extraSectors + 1) * SECTOR);
    this.position += length;
  }

  /** Zeroes up to the next cluster boundary, before a plain cluster. */
  alignment(): number {
    const over = (this.position - this.layout.dataOffset) % CLUSTER_SIZE;
    return over === 0 ? 0 : CLUSTER_SIZE - over;
  }

  plain(guestCluster: number): void {
    this.#entry(guestCluster, BigInt(this.position) | COPIED);
    this.#count(this.position, this.position + CLUSTER_SIZE);
    this.position += CLUSTER_SIZE;
  }

  /** The refcount blocks, in order: metadata clusters 1, the room as counted, the hole 0. */
  *refcountBlocks(): Generator<Buffer> {
    const { layout } = this;
    const dataStart = layout.dataOffset / CLUSTER_SIZE;
    const tailStart = layout.refcountBlocksOffset / CLUSTER_SIZE;
    for (let block = 0; block < layout.refcountBlocks; block++) {
      const refcounts = Buffer.alloc(CLUSTER_SIZE);
      const first = block * REFCOUNTS_PER_BLOCK;
      const end = Math.min(first + REFCOUNTS_PER_BLOCK, layout.totalClusters);
      for (let cluster = first; cluster < end; cluster++) {
        const count = cluster < dataStart || cluster >= tailStart ? 1 : this.#refcounts[cluster - dataStart]!;
        if (count !== 0) refcounts.writeUInt16BE(count, (cluster - first) * 2);
      }
      yield refcounts;
    }
  }

  *l2Tables(): Generator<Buffer> {
    for (const index of this.layout.l2Indexes) yield this.#l2Tables.get(index) ?? Buffer.alloc(CLUSTER_SIZE);
  }
}

/**
 * Appends the data of a compressed image (after its header, L1 and refcount table), the
 * hole, and the trailing refcount blocks and L2 tables. `output` ends at the layout's size.
 */
export async function appendCompressedData(
  output: BatchedWrites,
  layout: Qcow2Layout,
  compression: ClusterCompression,
  chunks: AsyncIterable<ReadChunk>,
  options: { signal?: AbortSignal; onProgress?: (guestOffset: number) => void },
): Promise<CompressedDataResult> {
  const placement = new Placement(layout);
  let dataBytes = 0;
  let storedBytes = output.appended;
  const inFlight: Array<{ batch: ClusterBatch; clusters: Buffer[]; packed: Buffer; compressed: Promise<number[]> }> = [];
  const freeOutputs: Buffer[] = [];
  const place = async () => {
    const { batch, clusters, packed, compressed } = inFlight.shift()!;
    const lengths = await compressed;
    let plainClusters = false;
    let at = 0;
    for (let index = 0; index < clusters.length; index++) {
      const length = lengths[index]!;
      const guestCluster = batch.guestClusters[index]!;
      if (length > 0) {
        placement.compressed(guestCluster, length);
        await output.append(packed.subarray(at, at + length));
        at += length;
      } else {
        const padding = placement.alignment();
        await output.appendZeroes(padding);
        placement.position += padding;
        placement.plain(guestCluster);
        await output.append(clusters[index]!);
        plainClusters = true;
      }
    }
    // Plain clusters are written from the batch's memory: it is reused once they landed.
    if (plainClusters) output.releaseAfterWrite(batch.release);
    else batch.release();
    output.releaseAfterWrite(() => void freeOutputs.push(packed));
    dataBytes += batch.dataBytes;
  };
  try {
    for await (const batch of storedClusterBatches(layout.input.runs, chunks, options)) {
      const clusters = batch.guestClusters.map((_, index) => batch.data.subarray(index * CLUSTER_SIZE, (index + 1) * CLUSTER_SIZE));
      const packed = freeOutputs.pop() ?? Buffer.allocUnsafe(BATCH_CLUSTERS * CLUSTER_SIZE);
      const compressed = compressClusters(compression, clusters, packed);
      compressed.catch(() => undefined);
      inFlight.push({ batch, clusters, packed, compressed });
      if (inFlight.length >= BATCHES_IN_FLIGHT) await place();
    }
    while (inFlight.length > 0) await place();
  } finally {
    // Batches still compressing when the copy failed: let them finish before the caller closes up.
    await Promise.allSettled(inFlight.map((entry) => entry.compressed));
  }
  if (placement.position > layout.refcountBlocksOffset) throw new Error(`compressed data ran to ${placement.position}, past its room`);
  storedBytes += placement.position - layout.dataOffset;
  await output.appendHole(layout.refcountBlocksOffset - placement.position);
  for (const block of placement.refcountBlocks()) await output.append(block);
  for (const table of placement.l2Tables()) await output.append(table);
  storedBytes += layout.fileSize - layout.refcountBlocksOffset;
  return { dataBytes, storedBytes };
}
