// A qcow2 (version 3) image laid out so that it can be written front to back in
// one pass: every piece of metadata is computed from the list of clusters the
// image will hold before any guest data is read.
//
//   [header + extensions + backing name] [L1] [refcount table] [refcount blocks]
//   [L2 tables] [data clusters, in guest order]
//
// Every cluster is used once (refcount 1). A cluster not listed is unallocated:
// it reads from the backing file, or as zeroes without one.
//
// Inputs are checked before anything is planned, and refused with a RangeError that
// says what is wrong: a virtual size that is not whole 512-byte sectors (qemu would
// silently drop the rest) or too large for qemu to open, runs that are unsorted,
// overlap, are empty or lie past the disk, and backing file names or formats qemu
// would truncate. Adjacent runs are fine: they describe the same clusters as one.

import { setImmediate as nextTurn } from 'node:timers/promises';

export const CLUSTER_BITS = 16;
export const CLUSTER_SIZE = 1 << CLUSTER_BITS;
export const L2_ENTRIES = CLUSTER_SIZE / 8;
const REFCOUNT_ORDER = 4; // 16-bit refcounts, QEMU's default
export const REFCOUNTS_PER_BLOCK = (CLUSTER_SIZE * 8) / (1 << REFCOUNT_ORDER);
const HEADER_LENGTH = 104;
/** With the compression_type byte (and padding to 8 bytes). */
const HEADER_LENGTH_WITH_COMPRESSION_TYPE = 112;
const INCOMPATIBLE_COMPRESSION_TYPE = 1n << 3n;
const BACKING_FORMAT_EXTENSION = 0xe2792aca;
export const COPIED = 1n << 63n;
const COPIED_HIGH_WORD = 0x80000000;
/** A 16-bit refcount of one, big-endian: refcount blocks are this, repeated. */
const REFCOUNT_ONE = Buffer.from([0, 1]);
const HOST_IS_BIG_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 0;
/** qemu counts a qcow2 image's size in 512-byte sectors. */
const SECTOR_SIZE = 512;
/** qemu opens L1 tables of up to 32 MiB (QCOW_MAX_L1_SIZE): 2^22 entries, each mapping one L2 table. */
const MAX_L1_ENTRIES = 2 ** 22;
/** Largest virtual size qemu opens with 64 KiB clusters: 2 PiB. */
export const MAX_VIRTUAL_SIZE = MAX_L1_ENTRIES * L2_ENTRIES * CLUSTER_SIZE;
/** ...and refcount tables of up to 8 MiB (QCOW_MAX_REFTABLE_SIZE). */
const MAX_REFCOUNT_TABLE_CLUSTERS = (8 * 1024 * 1024) / CLUSTER_SIZE;
/** qemu reads at most 1023 bytes of backing file name. */
const MAX_BACKING_FILE_BYTES = 1023;
/** ...and a backing format name shorter than 16 bytes. */
const MAX_BACKING_FORMAT_BYTES = 15;

/** A run of guest clusters `[start, start + count)` that the image stores. */
export interface ClusterRun {
  start: number;
  count: number;
}

export interface Qcow2LayoutInput {
  /** Guest-visible size in bytes: whole 512-byte sectors, at most `MAX_VIRTUAL_SIZE`. */
  virtualSize: number;
  /** Sorted, non-overlapping runs of stored clusters (adjacent ones are fine), inside the disk. */
  runs: readonly ClusterRun[];
  /** Backing file name as written in the header (a basename keeps a chain relocatable); at most 1023 bytes, no NUL. */
  backingFile?: string;
  /** Format of the backing file (`qcow2`, `raw`); only with `backingFile`. */
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

/**
 * Turns byte ranges in offset order into sorted, merged cluster runs: ranges are rounded
 * out to clusters, and ranges that overlap or touch (after rounding) become one run.
 */
export function clusterRuns(ranges: Iterable<{ offset: number; length: number }>): ClusterRun[] {
  const runs: ClusterRun[] = [];
  let index = 0;
  for (const { offset, length } of ranges) {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new RangeError(`byte range ${index} (${offset}+${length}) must be a non-negative offset and length`);
    }
    index++;
    if (length === 0) continue;
    const start = Math.floor(offset / CLUSTER_SIZE);
    const end = Math.ceil((offset + length) / CLUSTER_SIZE);
    const last = runs[runs.length - 1];
    if (last && start < last.start)
      throw new RangeError(`byte range ${index - 1} at ${offset} comes before cluster ${last.start}: ranges must come in offset order`);
    if (last && start <= last.start + last.count) last.count = Math.max(last.count, end - last.start);
    else runs.push({ start, count: end - start });
  }
  return runs;
}

function checkInput(input: Qcow2LayoutInput): void {
  const { virtualSize, runs, backingFile, backingFormat } = input;
  if (!Number.isSafeInteger(virtualSize) || virtualSize < 0 || virtualSize > MAX_VIRTUAL_SIZE) {
    throw new RangeError(`virtual size ${virtualSize} must be a whole number of bytes from 0 to ${MAX_VIRTUAL_SIZE}`);
  }
  if (virtualSize % SECTOR_SIZE !== 0) {
    throw new RangeError(
      `virtual size ${virtualSize} is not a multiple of 512: qemu reads a qcow2 size in whole sectors and would drop the last ${virtualSize % SECTOR_SIZE} bytes`,
    );
  }
  const guestClusters = clustersFor(virtualSize);
  let end = 0;
  runs.forEach((run, index) => {
    if (!Number.isSafeInteger(run.start) || !Number.isSafeInteger(run.count) || run.start < 0 || run.count < 1) {
      throw new RangeError(`runs[${index}] (${run.start}+${run.count}) must be a first cluster and a count of at least 1`);
    }
    if (run.start < end) {
      throw new RangeError(`runs[${index}] starts at cluster ${run.start}, before runs[${index - 1}] ends at ${end}: runs must be sorted and must not overlap`);
    }
    end = run.start + run.count;
    if (end > guestClusters) throw new RangeError(`cluster run ${run.start}+${run.count} lies beyond the disk (${guestClusters} clusters)`);
  });
  if (backingFile !== undefined) {
    const bytes = Buffer.byteLength(backingFile, 'utf8');
    if (bytes === 0 || bytes > MAX_BACKING_FILE_BYTES || backingFile.includes('\0')) {
      throw new RangeError(`backing file name must be 1 to ${MAX_BACKING_FILE_BYTES} bytes without NUL, not ${bytes} bytes`);
    }
  }
  if (backingFormat !== undefined) {
    if (backingFile === undefined) throw new RangeError('a backing format needs a backing file');
    const bytes = Buffer.byteLength(backingFormat, 'utf8');
    if (bytes === 0 || bytes > MAX_BACKING_FORMAT_BYTES || backingFormat.includes('\0')) {
      throw new RangeError(`backing format must be 1 to ${MAX_BACKING_FORMAT_BYTES} bytes without NUL, not ${JSON.stringify(backingFormat.slice(0, 32))}`);
    }
  }
}

/** How many clusters each part of an image takes: the same for every way of placing the parts. */
export interface Qcow2ClusterCounts {
  l1Entries: number;
  l1Clusters: number;
  /** L1 indexes that get an L2 table, in order. */
  l2Indexes: number[];
  dataClusters: number;
  refcountBlocks: number;
  refcountTableClusters: number;
}

/** Checks the input, then counts the clusters of every part of an image holding it. */
export function countClusters(input: Qcow2LayoutInput): Qcow2ClusterCounts {
  checkInput(input);
  const guestClusters = clustersFor(input.virtualSize);
  const l1Entries = Math.max(1, Math.ceil(guestClusters / L2_ENTRIES));
  const l2Indexes: number[] = [];
  let dataClusters = 0;
  for (const run of input.runs) {
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
  if (refcountTableClusters > MAX_REFCOUNT_TABLE_CLUSTERS) {
    throw new RangeError(`an image of ${dataClusters} data clusters needs a refcount table larger than qemu opens`);
  }
  return { l1Entries, l1Clusters, l2Indexes, dataClusters, refcountBlocks, refcountTableClusters };
}

export function planQcow2(input: Qcow2LayoutInput): Qcow2Layout {
  const { l1Entries, l1Clusters, l2Indexes, dataClusters, refcountBlocks, refcountTableClusters } = countClusters(input);
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

/** Metadata clusters made between two turns of the event loop (a few milliseconds of work). */
const METADATA_CLUSTERS_PER_TURN = 16;

/**
 * The layout's metadata clusters, letting the event loop run every few: a large disk has
 * thousands of L2 tables and refcount blocks, made on the JS thread, that would otherwise
 * follow one another without a break (the writes they are appended to rarely wait).
 */
export async function* metadataInTurns(layout: Qcow2Layout): AsyncGenerator<Buffer> {
  let made = 0;
  for (const cluster of metadataClusters(layout)) {
    yield cluster;
    if (++made % METADATA_CLUSTERS_PER_TURN === 0) await nextTurn();
  }
}

/** The metadata clusters, in file order, generated one at a time (bounded memory). */
export function* metadataClusters(layout: Qcow2Layout): Generator<Buffer> {
  yield headerCluster(layout);
  yield l1Table(layout);
  yield refcountTable(layout);

  for (let block = 0; block < layout.refcountBlocks; block++) {
    const refcounts = Buffer.alloc(CLUSTER_SIZE);
    const first = block * REFCOUNTS_PER_BLOCK;
    const used = Math.min(REFCOUNTS_PER_BLOCK, layout.totalClusters - first);
    refcounts.fill(REFCOUNT_ONE, 0, used * 2);
    yield refcounts;
  }

  // L2 tables: data clusters get consecutive host offsets in guest order.
  const runs = layout.input.runs;
  let runIndex = 0;
  let hostCluster = layout.dataOffset / CLUSTER_SIZE;
  for (const index of layout.l2Indexes) {
    const l2 = Buffer.alloc(CLUSTER_SIZE);
    const words = new Uint32Array(l2.buffer, l2.byteOffset, CLUSTER_SIZE / 4);
    const first = index * L2_ENTRIES;
    const end = first + L2_ENTRIES;
    while (runIndex < runs.length && runs[runIndex]!.start < end) {
      const run = runs[runIndex]!;
      const from = Math.max(run.start, first);
      const to = Math.min(run.start + run.count, end);
      fillConsecutiveEntries(words, from - first, to - from, hostCluster);
      hostCluster += to - from;
      if (run.start + run.count <= end) runIndex++;
      else break;
    }
    if (!HOST_IS_BIG_ENDIAN) l2.swap32();
    yield l2;
  }
}

/**
 * L2 entries `[entry, entry + count)` of `words` (the table as 32-bit words in host order,
 * byte-swapped afterwards) map consecutive host clusters from `hostCluster` on, each with
 * the COPIED flag (refcount exactly one). A large disk has millions of entries, all made
 * on the JS thread: 32-bit words, counted up, cost a tenth of the BigInt arithmetic that
 * used to take seconds per TiB.
 */
function fillConsecutiveEntries(words: Uint32Array, entry: number, count: number, hostCluster: number): void {
  // Host offset = hostCluster * 2^16: its high word is hostCluster / 2^16, its low word the rest.
  let high = COPIED_HIGH_WORD + Math.floor(hostCluster / 2 ** 16);
  let low = (hostCluster % 2 ** 16) * CLUSTER_SIZE;
  for (let word = entry * 2, last = (entry + count) * 2; word < last; word += 2) {
    words[word] = high;
    words[word + 1] = low;
    low += CLUSTER_SIZE;
    if (low === 2 ** 32) {
      low = 0;
      high++;
    }
  }
}

/** The L1 table: one entry per L2 table, each at `layout.l2Offset` onwards in order. */
export function l1Table(layout: Qcow2Layout): Buffer {
  const l1 = Buffer.alloc(layout.l1Clusters * CLUSTER_SIZE);
  layout.l2Indexes.forEach((index, n) => l1.writeBigUInt64BE(BigInt(layout.l2Offset + n * CLUSTER_SIZE) | COPIED, index * 8));
  return l1;
}

/** The refcount table: the refcount blocks lie one after the other from `layout.refcountBlocksOffset`. */
export function refcountTable(layout: Qcow2Layout): Buffer {
  const table = Buffer.alloc(layout.refcountTableClusters * CLUSTER_SIZE);
  for (let block = 0; block < layout.refcountBlocks; block++) {
    table.writeBigUInt64BE(BigInt(layout.refcountBlocksOffset + block * CLUSTER_SIZE), block * 8);
  }
  return table;
}

/**
 * The header cluster. `compressionType` other than 0 (zlib) is written to the
 * compression_type field, with the incompatible feature bit that tells readers to look.
 */
export function headerCluster(layout: Qcow2Layout, compressionType = 0): Buffer {
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
  let at = HEADER_LENGTH;
  if (compressionType !== 0) {
    header.writeBigUInt64BE(INCOMPATIBLE_COMPRESSION_TYPE, 72);
    header.writeUInt8(compressionType, HEADER_LENGTH);
    at = HEADER_LENGTH_WITH_COMPRESSION_TYPE;
  }
  header.writeUInt32BE(at, 100);
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
