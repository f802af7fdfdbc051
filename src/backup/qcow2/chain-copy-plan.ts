// Decides, for every guest byte of a qcow2 chain, which file provides it, and turns
// that into what a single front-to-back read of each file must copy where. The
// topmost layer that has a range allocated (data, compressed or zero-flagged) answers
// for it; unallocated ranges fall through to the layer below; what no layer answers
// for reads as zeroes. A backing file smaller than its overlay reads as zeroes past its
// end, as QEMU reads it, whatever the layers below it hold there.
import { CLUSTER_SIZE as OUTPUT_CLUSTER_SIZE, type ClusterRun } from './qcow2-layout.js';
import type { ClusterCompression } from './cluster-compression.js';
import { EXTENT_COMPRESSED, EXTENT_DATA, EXTENT_ZERO, type Qcow2Image } from './qcow2-reader.js';

/** Sorted, disjoint `[start, end)` ranges; appending a range that touches the last one extends it. */
class RangeList {
  count = 0;
  starts = new Float64Array(16);
  ends = new Float64Array(16);

  append(start: number, end: number): void {
    if (end <= start) return;
    const last = this.count - 1;
    if (last >= 0 && start <= this.ends[last]!) {
      if (end > this.ends[last]!) this.ends[last] = end;
      return;
    }
    if (this.count === this.starts.length) {
      const starts = new Float64Array(this.count * 2);
      const ends = new Float64Array(this.count * 2);
      starts.set(this.starts);
      ends.set(this.ends);
      this.starts = starts;
      this.ends = ends;
    }
    this.starts[this.count] = start;
    this.ends[this.count] = end;
    this.count++;
  }

  static union(first: RangeList, second: RangeList): RangeList {
    const union = new RangeList();
    let i = 0;
    let j = 0;
    while (i < first.count || j < second.count) {
      const takeFirst = j >= second.count || (i < first.count && first.starts[i]! <= second.starts[j]!);
      if (takeFirst) {
        union.append(first.starts[i]!, first.ends[i]!);
        i++;
      } else {
        union.append(second.starts[j]!, second.ends[j]!);
        j++;
      }
    }
    return union;
  }
}

/**
 * Where the bytes of one chain file go, grouped by the fixed-size chunk of the file
 * they are found in, so the copy reads the file in order and looks up each chunk's
 * work directly. Data pieces never cross a chunk boundary; a compressed cluster is
 * listed under the chunk its stream ends in (it starts in that chunk or the one before).
 */
export interface FileCopyPieces {
  chunkBytes: number;
  chunkCount: number;
  clusterSize: number;
  /** How the file's compressed clusters are compressed. */
  compression: ClusterCompression;
  data: {
    /** Pieces of chunk k are indexes `bucketStart[k]` to `bucketStart[k + 1]`. */
    bucketStart: Uint32Array;
    hostOffset: Float64Array;
    guestOffset: Float64Array;
    length: Float64Array;
  };
  compressed: {
    bucketStart: Uint32Array;
    hostOffset: Float64Array;
    streamLength: Float64Array;
    guestOffset: Float64Array;
    length: Float64Array;
    /** Where in the inflated cluster the guest range starts. */
    skip: Float64Array;
  };
  /** Guest bytes this file provides. */
  dataBytes: number;
}

export interface ChainCopyPlan {
  virtualSize: number;
  /** Same order as the images given (base first). */
  files: FileCopyPieces[];
  /** Output clusters (of the qcow2 writer's size) that hold data, for a qcow2 output. */
  dataRuns: ClusterRun[];
  /** Guest bytes that come from some file; the rest of the disk reads as zeroes. */
  dataBytes: number;
}

/** Winning ranges of one layer, in guest order. */
class Winners {
  count = 0;
  compressed = new Uint8Array(16);
  guestOffset = new Float64Array(16);
  length = new Float64Array(16);
  hostOffset = new Float64Array(16);
  streamLength = new Float64Array(16);
  skip = new Float64Array(16);

  push(compressed: boolean, guestOffset: number, length: number, hostOffset: number, streamLength: number, skip: number): void {
    if (this.count === this.guestOffset.length) this.grow();
    const index = this.count++;
    this.compressed[index] = compressed ? 1 : 0;
    this.guestOffset[index] = guestOffset;
    this.length[index] = length;
    this.hostOffset[index] = hostOffset;
    this.streamLength[index] = streamLength;
    this.skip[index] = skip;
  }

  private grow(): void {
    const size = this.count * 2;
    const widen = <T extends Float64Array | Uint8Array>(old: T, fresh: T): T => {
      fresh.set(old);
      return fresh;
    };
    this.compressed = widen(this.compressed, new Uint8Array(size));
    this.guestOffset = widen(this.guestOffset, new Float64Array(size));
    this.length = widen(this.length, new Float64Array(size));
    this.hostOffset = widen(this.hostOffset, new Float64Array(size));
    this.streamLength = widen(this.streamLength, new Float64Array(size));
    this.skip = widen(this.skip, new Float64Array(size));
  }
}

/** The winning ranges of each layer (base first) and the output clusters that hold data. */
function chainWinners(images: readonly Qcow2Image[]): { virtualSize: number; winners: Winners[]; dataRuns: ClusterRun[] } {
  if (images.length === 0) throw new Error('a chain has at least one image');
  const virtualSize = images.at(-1)!.header.virtualSize;
  const winners: Winners[] = new Array<Winners>(images.length);
  let claimed = new RangeList();
  let dataRanges = new RangeList();
  // A layer is seen through every layer above it, so only up to the smallest of their sizes.
  let limit = virtualSize;
  for (let layer = images.length - 1; layer >= 0; layer--) {
    const { header, extents } = images[layer]!;
    limit = Math.min(limit, header.virtualSize);
    const own = new RangeList();
    const won = new Winners();
    const dataHere = new RangeList();
    let firstClaim = 0;
    for (let index = 0; index < extents.count; index++) {
      const start = extents.guestOffset[index]!;
      if (start >= limit) break;
      const end = Math.min(start + extents.length[index]!, limit);
      const kind = extents.kind[index]!;
      own.append(start, end);
      while (firstClaim < claimed.count && claimed.ends[firstClaim]! <= start) firstClaim++;
      // The parts of [start, end) no layer above has claimed are this layer's.
      let at = start;
      let claim = firstClaim;
      while (at < end) {
        while (claim < claimed.count && claimed.ends[claim]! <= at) claim++;
        if (claim < claimed.count && claimed.starts[claim]! <= at) {
          at = claimed.ends[claim]!;
          continue;
        }
        const freeEnd = claim < claimed.count ? Math.min(end, claimed.starts[claim]!) : end;
        if (kind !== EXTENT_ZERO) {
          const delta = at - start;
          if (kind === EXTENT_DATA) won.push(false, at, freeEnd - at, extents.hostOffset[index]! + delta, 0, 0);
          else if (kind === EXTENT_COMPRESSED) won.push(true, at, freeEnd - at, extents.hostOffset[index]!, extents.compressedLength[index]!, delta);
          dataHere.append(Math.floor(at / OUTPUT_CLUSTER_SIZE) * OUTPUT_CLUSTER_SIZE, Math.ceil(freeEnd / OUTPUT_CLUSTER_SIZE) * OUTPUT_CLUSTER_SIZE);
        }
        at = freeEnd;
      }
    }
    winners[layer] = won;
    claimed = RangeList.union(claimed, own);
    dataRanges = RangeList.union(dataRanges, dataHere);
  }
  const dataRuns: ClusterRun[] = [];
  for (let index = 0; index < dataRanges.count; index++) {
    const start = dataRanges.starts[index]! / OUTPUT_CLUSTER_SIZE;
    dataRuns.push({ start, count: dataRanges.ends[index]! / OUTPUT_CLUSTER_SIZE - start });
  }
  return { virtualSize, winners, dataRuns };
}

/**
 * Plans the copy of a chain (base first) read in chunks of `chunkBytes`, which must hold
 * any compressed stream (twice the largest cluster size, 4 MiB).
 */
export function planChainCopy(images: readonly Qcow2Image[], chunkBytes: number): ChainCopyPlan {
  const { virtualSize, winners, dataRuns } = chainWinners(images);
  const files = images.map((image, layer) => bucketByChunk(winners[layer]!, image, chunkBytes));
  return { virtualSize, files, dataRuns, dataBytes: files.reduce((sum, file) => sum + file.dataBytes, 0) };
}

/**
 * Every guest range some file provides, in guest order, with the file (`layer`, base 0)
 * and where in it: the order a stream of the whole disk needs, front to back.
 * Data past the end of its file reads as zeroes and is left out.
 */
export interface GuestOrderPlan {
  virtualSize: number;
  /** Output clusters (of the qcow2 writer's size) that hold data. */
  dataRuns: ClusterRun[];
  count: number;
  layer: Uint16Array;
  compressed: Uint8Array;
  guestOffset: Float64Array;
  length: Float64Array;
  hostOffset: Float64Array;
  /** For compressed ranges: the stream's length, and where in the inflated cluster the range starts. */
  streamLength: Float64Array;
  skip: Float64Array;
  /** Guest bytes that come from some file. */
  dataBytes: number;
}

export function planGuestOrder(images: readonly Qcow2Image[]): GuestOrderPlan {
  const { virtualSize, winners, dataRuns } = chainWinners(images);
  // Each layer's ranges are in guest order and no two layers' overlap: a merge by start.
  const order: Array<{ layer: number; index: number; start: number }> = [];
  winners.forEach((won, layer) => {
    for (let index = 0; index < won.count; index++) order.push({ layer, index, start: won.guestOffset[index]! });
  });
  order.sort((a, b) => a.start - b.start);
  const count = order.length;
  const plan: GuestOrderPlan = {
    virtualSize,
    dataRuns,
    count: 0,
    layer: new Uint16Array(count),
    compressed: new Uint8Array(count),
    guestOffset: new Float64Array(count),
    length: new Float64Array(count),
    hostOffset: new Float64Array(count),
    streamLength: new Float64Array(count),
    skip: new Float64Array(count),
    dataBytes: 0,
  };
  for (const { layer, index } of order) {
    const won = winners[layer]!;
    const compressed = won.compressed[index] === 1;
    let length = won.length[index]!;
    if (!compressed) length = Math.max(0, Math.min(length, images[layer]!.fileSize - won.hostOffset[index]!));
    if (length === 0) continue;
    const slot = plan.count++;
    plan.layer[slot] = layer;
    plan.compressed[slot] = compressed ? 1 : 0;
    plan.guestOffset[slot] = won.guestOffset[index]!;
    plan.length[slot] = length;
    plan.hostOffset[slot] = won.hostOffset[index]!;
    plan.streamLength[slot] = won.streamLength[index]!;
    plan.skip[slot] = won.skip[index]!;
    plan.dataBytes += length;
  }
  return plan;
}

/** Counting sort of one layer's winners into the chunks of its file. */
function bucketByChunk(won: Winners, image: Qcow2Image, chunkBytes: number): FileCopyPieces {
  const { fileSize } = image;
  const { clusterSize } = image.header;
  if (chunkBytes < 2 * clusterSize) throw new Error(`chunks of ${chunkBytes} bytes cannot hold a compressed cluster of ${clusterSize}-byte clusters`);
  const chunkCount = Math.ceil(fileSize / chunkBytes);
  const dataCounts = new Uint32Array(chunkCount + 1);
  const compressedCounts = new Uint32Array(chunkCount + 1);
  // Data past the end of the file reads as zeroes, which the output already holds.
  const eachDataPiece = (index: number, visit: (chunk: number, hostOffset: number, guestOffset: number, length: number) => void) => {
    const host = won.hostOffset[index]!;
    const end = Math.min(host + won.length[index]!, fileSize);
    for (let at = host; at < end;) {
      const chunk = Math.floor(at / chunkBytes);
      const pieceEnd = Math.min(end, (chunk + 1) * chunkBytes);
      visit(chunk, at, won.guestOffset[index]! + (at - host), pieceEnd - at);
      at = pieceEnd;
    }
  };
  const compressedChunk = (index: number) => Math.floor((won.hostOffset[index]! + won.streamLength[index]! - 1) / chunkBytes);
  for (let index = 0; index < won.count; index++) {
    if (won.compressed[index]) compressedCounts[compressedChunk(index) + 1]!++;
    else eachDataPiece(index, (chunk) => dataCounts[chunk + 1]!++);
  }
  for (let chunk = 0; chunk < chunkCount; chunk++) {
    dataCounts[chunk + 1]! += dataCounts[chunk]!;
    compressedCounts[chunk + 1]! += compressedCounts[chunk]!;
  }
  const dataTotal = dataCounts[chunkCount]!;
  const compressedTotal = compressedCounts[chunkCount]!;
  const data = {
    bucketStart: dataCounts.slice(),
    hostOffset: new Float64Array(dataTotal),
    guestOffset: new Float64Array(dataTotal),
    length: new Float64Array(dataTotal),
  };
  const compressed = {
    bucketStart: compressedCounts.slice(),
    hostOffset: new Float64Array(compressedTotal),
    streamLength: new Float64Array(compressedTotal),
    guestOffset: new Float64Array(compressedTotal),
    length: new Float64Array(compressedTotal),
    skip: new Float64Array(compressedTotal),
  };
  let dataBytes = 0;
  for (let index = 0; index < won.count; index++) {
    dataBytes += won.length[index]!;
    if (won.compressed[index]) {
      const slot = compressedCounts[compressedChunk(index)]!++;
      compressed.hostOffset[slot] = won.hostOffset[index]!;
      compressed.streamLength[slot] = won.streamLength[index]!;
      compressed.guestOffset[slot] = won.guestOffset[index]!;
      compressed.length[slot] = won.length[index]!;
      compressed.skip[slot] = won.skip[index]!;
    } else {
      eachDataPiece(index, (chunk, hostOffset, guestOffset, length) => {
        const slot = dataCounts[chunk]!++;
        data.hostOffset[slot] = hostOffset;
        data.guestOffset[slot] = guestOffset;
        data.length[slot] = length;
      });
    }
  }
  return { chunkBytes, chunkCount, clusterSize, compression: image.header.compression, data, compressed, dataBytes };
}
