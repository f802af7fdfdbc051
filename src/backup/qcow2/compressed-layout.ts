// The layout of a qcow2 image whose clusters are compressed, written front to back in
// one pass. Where compressed clusters land depends on how well each compresses, which
// is known only as the data streams through; the L2 tables and refcounts that record it
// therefore come after the data. Everything before the data (header, L1, refcount
// table) points at them, so their place is fixed up front: after room for every stored
// cluster stored plain, the most the data can take.
//
//   [header] [L1] [refcount table] [data: compressed clusters packed, plain ones
//   cluster-aligned] [hole up to the room's end] [refcount blocks] [L2 tables]
//
// The hole is never written: the file takes the space of its compressed data and
// metadata, while its apparent size is that of the image stored plain. Each plain
// cluster is preceded by zeroes up to a cluster boundary; a cluster never takes more
// room than one cluster, so the data always fits.
import { CLUSTER_SIZE, L2_ENTRIES, MAX_VIRTUAL_SIZE, REFCOUNTS_PER_BLOCK, checkInput, type Qcow2Layout, type Qcow2LayoutInput } from './qcow2-layout.js';

const MAX_REFCOUNT_TABLE_CLUSTERS = (8 * 1024 * 1024) / CLUSTER_SIZE;

const clustersFor = (bytes: number) => Math.ceil(bytes / CLUSTER_SIZE);

/** A compressed image's layout: `dataOffset` to `refcountBlocksOffset` is the room for the data. */
export function planCompressedQcow2(input: Qcow2LayoutInput): Qcow2Layout {
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
  let refcountBlocks = 1;
  let refcountTableClusters = 1;
  for (;;) {
    const total = 1 + l1Clusters + refcountTableClusters + dataClusters + refcountBlocks + l2Indexes.length;
    const blocks = Math.ceil(total / REFCOUNTS_PER_BLOCK);
    const tableClusters = clustersFor(blocks * 8);
    if (blocks === refcountBlocks && tableClusters === refcountTableClusters) break;
    refcountBlocks = blocks;
    refcountTableClusters = tableClusters;
  }
  if (refcountTableClusters > MAX_REFCOUNT_TABLE_CLUSTERS || input.virtualSize > MAX_VIRTUAL_SIZE) {
    throw new RangeError(`an image of ${dataClusters} data clusters needs a refcount table larger than qemu opens`);
  }
  const l1Offset = CLUSTER_SIZE;
  const refcountTableOffset = l1Offset + l1Clusters * CLUSTER_SIZE;
  const dataOffset = refcountTableOffset + refcountTableClusters * CLUSTER_SIZE;
  const refcountBlocksOffset = dataOffset + dataClusters * CLUSTER_SIZE;
  const l2Offset = refcountBlocksOffset + refcountBlocks * CLUSTER_SIZE;
  const totalClusters = l2Offset / CLUSTER_SIZE + l2Indexes.length;
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
