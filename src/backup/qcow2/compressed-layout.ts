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
import { CLUSTER_SIZE, countClusters, type Qcow2Layout, type Qcow2LayoutInput } from './qcow2-layout.js';

/** A compressed image's layout: `dataOffset` to `refcountBlocksOffset` is the room for the data. */
export function planCompressedQcow2(input: Qcow2LayoutInput): Qcow2Layout {
  const { l1Entries, l1Clusters, l2Indexes, dataClusters, refcountBlocks, refcountTableClusters } = countClusters(input);
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
