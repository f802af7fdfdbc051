// zstd compression of qcow2 clusters, on libuv's thread pool: a batch of clusters is
// compressed by one worker (one zstd context per pool thread, reused), so a backup's
// compression spreads over the cores while the JS thread keeps reading. Decompression
// of one compressed cluster reads a zstd frame that may be followed by other bytes
// (the next cluster's, as qcow2 packs them), as QEMU does.
#pragma once

#include <napi.h>

namespace lvb {

// zstdCompressClusters(clusters: Uint8Array[], level: number, output: Uint8Array): Promise<number[]>
// The frames are written one after the other into `output`; the result is each one's
// length, 0 for a cluster whose frame would not be smaller than the cluster itself (or
// that no longer fits in `output`).
Napi::Value ZstdCompressClusters(const Napi::CallbackInfo& info);

// zstdDecompressCluster(frame: Uint8Array, clusterSize: number): Promise<Buffer>
Napi::Value ZstdDecompressCluster(const Napi::CallbackInfo& info);

}  // namespace lvb
