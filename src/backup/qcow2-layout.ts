// A qcow2 (version 3) image laid out so that it can be written front to back in
// one pass: every piece of metadata is computed from the list of clusters the
// image will hold before any guest data is read.
//
//   [header + extensions + backing name] [L1] [refcount table] [refcount blocks]
//   [L2 tables] [data clusters, in guest order]
//
// Every cluster is used once (refcount 1). A cluster not listed is unallocated:
// it reads from the backing file, or as zeroes without one.

export const CLUSTER_BITS = 16;
export const CLUSTER_SIZE = 1 << CLUSTER_BITS;
const L2_ENTRIES = CLUSTER_SIZE / 8;
const REFCOUNT_ORDER = 4; // 16-bit refcounts, QEMU's default
const REFCOUNTS_PER_BLOCK = (CLUSTER_SIZE * 8) / (1 << REFCOUNT_ORDER);
const HEADER_LENGTH = 104;
const BACKING_FORMAT_EXTENSION = 0xe2792aca;
const COPIED = 1n << 63n;

/** A run of guest clusters `[start, start + count)` that the image stores. */
export interface ClusterRun {
  start: number;
  count: number;
}

export interface Qcow2LayoutInput {
  /** Guest-visible size in bytes. */
  virtualSize: number;
  /** Sorted, non-overlapping, non-adjacent runs of stored clusters. */
  runs: readonly ClusterRun[];
  /** Backing file name as written in the header (a basename keeps a chain relocatable). */
  backingFile?: string;
  backingFormat?: string;
}

export interface Qcow2Layout {
  input: Qcow2LayoutInput;
  l1Entries: number;
  l1Offset: number;
  l1Clusters: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  refcountBlocksOffset: number;
  refcountBlocks: number;
  l2Offset: number;
  /** L1 indexes that get an L2 table, in order. */
  l2Indexes: number[];
  dataOffset: number;
  dataClusters: number;
  totalClusters: number;
  fileSize: number;
}

const clustersFor = (bytes: number) => Math.ceil(bytes / CLUSTER_SIZE);

/** Turns byte ranges into sorted, merged cluster runs (ranges are rounded out to clusters). */
export function clusterRuns(ranges: Iterable<{ offset: number; length: number }>): ClusterRun[] {
  const runs: ClusterRun[] = [];
  for (const { offset, length } of ranges) {
    if (length <= 0) continue;
    const start = Math.floor(offset / CLUSTER_SIZE);
    const end = Math.ceil((offset + length) / CLUSTER_SIZE);
    const last = runs[runs.length - 1];
    if (last && start < last.start) throw new Error('cluster runs must come in offset order');
    if (last && start <= last.start + last.count) last.count = Math.max(last.count, end - last.start);
    else runs.push({ start, count: end - start });
  }
  return runs;
}

export function planQcow2(input: Qcow2LayoutInput): Qcow2Layout {
  const guestClusters = clustersFor(input.virtualSize);
  const l1Entries = Math.max(1, Math.ceil(guestClusters / L2_ENTRIES));
  const l2Indexes: number[] = [];
  let dataClusters = 0;
  for (const run of input.runs) {
    if (run.start + run.count > guestClusters) throw new Error(`cluster run ${run.start}+${run.count} lies beyond the disk`);
    dataClusters += run.count;
    for (let index = Math.floor(run.start / L2_ENTRIES); index <= Math.floor((run.start + run.count - 1) / L2_ENTRIES); index++) {
      if (l2Indexes[l2Indexes.length - 1] !== index) l2Indexes.push(index);
    }
  }
  const l1Clusters = clustersFor(l1Entries * 8);
  // Refcount blocks count themselves and the table that points at them: iterate to a fixed point.
  let refcountBlocks = 1;
  let refcountTableClusters = 1;
  for (;;) {
    const total = 1 + l1Clusters + refcountTableClusters + refcountBlocks + l2Indexes.length + dataClusters;
    const blocks = Math.ceil(total / REFCOUNTS_PER_BLOCK);
    const tableClusters = clustersFor(blocks * 8);
    if (blocks === refcountBlocks && tableClusters === refcountTableClusters) break;
    refcountBlocks = blocks;
    refcountTableClusters = tableClusters;
  }
  const l1Offset = CLUSTER_SIZE;
  const refcountTableOffset = l1Offset + l1Clusters * CLUSTER_SIZE;
  const refcountBlocksOffset = refcountTableOffset + refcountTableClusters * CLUSTER_SIZE;
  const l2Offset = refcountBlocksOffset + refcountBlocks * CLUSTER_SIZE;
  const dataOffset = l2Offset + l2Indexes.length * CLUSTER_SIZE;
  const totalClusters = dataOffset / CLUSTER_SIZE + dataClusters;
  return {
    input,
    l1Entries,
    l1Offset,
    l1Clusters,
    refcountTableOffset,
    refcountTableClusters,
    refcountBlocksOffset,
    refcountBlocks,
    l2Offset,
    l2Indexes,
    dataOffset,
    dataClusters,
    totalClusters,
    fileSize: totalClusters * CLUSTER_SIZE,
  };
}

/** The metadata clusters, in file order, generated one at a time (bounded memory). */
export function* metadataClusters(layout: Qcow2Layout): Generator<Buffer> {
  yield headerCluster(layout);

  const l1 = Buffer.alloc(layout.l1Clusters * CLUSTER_SIZE);
  layout.l2Indexes.forEach((index, n) => l1.writeBigUInt64BE(BigInt(layout.l2Offset + n * CLUSTER_SIZE) | COPIED, index * 8));
  yield l1;

  const table = Buffer.alloc(layout.refcountTableClusters * CLUSTER_SIZE);
  for (let block = 0; block < layout.refcountBlocks; block++) {
    table.writeBigUInt64BE(BigInt(layout.refcountBlocksOffset + block * CLUSTER_SIZE), block * 8);
  }
  yield table;

  for (let block = 0; block < layout.refcountBlocks; block++) {
    const refcounts = Buffer.alloc(CLUSTER_SIZE);
    const first = block * REFCOUNTS_PER_BLOCK;
    const used = Math.min(REFCOUNTS_PER_BLOCK, layout.totalClusters - first);
    for (let i = 0; i < used; i++) refcounts.writeUInt16BE(1, i * 2);
    yield refcounts;
  }

  // L2 tables: data clusters get consecutive host offsets in guest order.
  const runs = layout.input.runs;
  let runIndex = 0;
  let hostCluster = layout.dataOffset / CLUSTER_SIZE;
  for (const index of layout.l2Indexes) {
    const l2 = Buffer.alloc(CLUSTER_SIZE);
    const first = index * L2_ENTRIES;
    const end = first + L2_ENTRIES;
    while (runIndex < runs.length && runs[runIndex]!.start < end) {
      const run = runs[runIndex]!;
      const from = Math.max(run.start, first);
      const to = Math.min(run.start + run.count, end);
      for (let guest = from; guest < to; guest++) {
        l2.writeBigUInt64BE((BigInt(hostCluster) << BigInt(CLUSTER_BITS)) | COPIED, (guest - first) * 8);
        hostCluster++;
      }
      if (run.start + run.count <= end) runIndex++;
      else break;
    }
    yield l2;
  }
}

function headerCluster(layout: Qcow2Layout): Buffer {
  const header = Buffer.alloc(CLUSTER_SIZE);
  const { backingFile, backingFormat } = layout.input;
  header.writeUInt32BE(0x514649fb, 0); // "QFI\xfb"
  header.writeUInt32BE(3, 4);
  header.writeUInt32BE(CLUSTER_BITS, 20);
  header.writeBigUInt64BE(BigInt(layout.input.virtualSize), 24);
  header.writeUInt32BE(0, 32); // no encryption
  header.writeUInt32BE(layout.l1Entries, 36);
  header.writeBigUInt64BE(BigInt(layout.l1Offset), 40);
  header.writeBigUInt64BE(BigInt(layout.refcountTableOffset), 48);
  header.writeUInt32BE(layout.refcountTableClusters, 56);
  header.writeUInt32BE(REFCOUNT_ORDER, 96);
  header.writeUInt32BE(HEADER_LENGTH, 100);
  let at = HEADER_LENGTH;
  if (backingFile !== undefined && backingFormat !== undefined) {
    const format = Buffer.from(backingFormat, 'utf8');
    header.writeUInt32BE(BACKING_FORMAT_EXTENSION, at);
    header.writeUInt32BE(format.length, at + 4);
    format.copy(header, at + 8);
    at += 8 + Math.ceil(format.length / 8) * 8;
  }
  at += 8; // end-of-extensions marker: type 0, length 0 (already zero)
  if (backingFile !== undefined) {
    const name = Buffer.from(backingFile, 'utf8');
    if (at + name.length > CLUSTER_SIZE || name.length > 1023) throw new Error(`backing file name too long: ${backingFile}`);
    name.copy(header, at);
    header.writeBigUInt64BE(BigInt(at), 8);
    header.writeUInt32BE(name.length, 16);
  }
  return header;
}
