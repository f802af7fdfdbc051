// Compression of qcow2 clusters as QEMU writes and reads them: zlib clusters are raw
// deflate with a 4 KiB window (QEMU inflates with windowBits -12, so a larger window
// would make streams it cannot read), zstd clusters are zstd frames (the image's
// compression_type says which). Both run off the JS thread: zlib on Node's thread
// pool, zstd on the addon's, so a backup's compression spreads over the cores.
import { deflateRaw, inflateRaw, constants as zlibConstants } from 'node:zlib';

import { nativeAddon } from '../../libvirt/native.js';

/** How a backup's clusters are compressed: qcow2's two compression types. */
export type ClusterCompression = 'zstd' | 'zlib';

export const CLUSTER_COMPRESSIONS: readonly ClusterCompression[] = ['zstd', 'zlib'];

/** qcow2's compression_type header field (QCOW2_COMPRESSION_TYPE_*). */
export const COMPRESSION_TYPE_CODES: Record<ClusterCompression, number> = { zlib: 0, zstd: 1 };

/**
 * zstd level 2 rather than QEMU's 3 (zstd's default): on file system data about 1 %
 * larger and a third faster. zlib at QEMU's level, its default (6).
 */
const ZSTD_LEVEL = 2;
const ZLIB_WINDOW_BITS = 12;

function deflateCluster(cluster: Uint8Array): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    deflateRaw(cluster, { windowBits: ZLIB_WINDOW_BITS, level: zlibConstants.Z_DEFAULT_COMPRESSION, memLevel: 9 }, (error, result) => {
      if (error) reject(error);
      else resolve(result.length < cluster.length ? result : null);
    });
  });
}

async function deflateClusters(clusters: readonly Uint8Array[], output: Uint8Array): Promise<number[]> {
  const streams = await Promise.all(clusters.map(deflateCluster));
  let at = 0;
  return streams.map((stream) => {
    if (stream === null || at + stream.length > output.length) return 0;
    output.set(stream, at);
    at += stream.length;
    return stream.length;
  });
}

/**
 * Compresses whole clusters into `output`, one compressed stream after the other (room
 * for the clusters' own size is always enough). Resolves with each stream's length, 0
 * where the compressed form would not be smaller (the cluster is then stored plain).
 */
export function compressClusters(kind: ClusterCompression, clusters: readonly Uint8Array[], output: Uint8Array): Promise<number[]> {
  if (kind === 'zstd') return nativeAddon().zstdCompressClusters(clusters, ZSTD_LEVEL, output);
  return deflateClusters(clusters, output);
}

/**
 * The cluster a compressed stream holds. The stream may run on into the next
 * cluster's bytes (qcow2 rounds it up to whole sectors); it must give exactly one
 * cluster. Errors carry only the codec's message: callers say where the stream lies.
 */
export async function decompressCluster(kind: ClusterCompression, stream: Buffer, clusterSize: number): Promise<Buffer> {
  const cluster =
    kind === 'zstd'
      ? await nativeAddon().zstdDecompressCluster(stream, clusterSize)
      : await new Promise<Buffer>((resolve, reject) => {
          inflateRaw(stream, { finishFlush: zlibConstants.Z_SYNC_FLUSH, maxOutputLength: clusterSize }, (error, result) => {
            if (error) reject(error);
            else resolve(result);
          });
        });
  if (cluster.length !== clusterSize) throw new Error(`it gives ${cluster.length} bytes, not one cluster of ${clusterSize}`);
  return cluster;
}
