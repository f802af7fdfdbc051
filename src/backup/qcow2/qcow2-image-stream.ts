// The bytes of a qcow2 image with writeQcow2's layout, produced front to back from the
// disk's runs in guest order: what an upload of an image file through a stream needs.
// Stored clusters lie in the file in guest order after the metadata, so a guest run maps
// to one file position; zero runs inside stored clusters, and the gaps between, are holes.
import { once } from '../../common/once.js';
import type { GuestRun } from './chain-guest-stream.js';
import { CLUSTER_SIZE, metadataInTurns, planQcow2, type ClusterRun, type Qcow2Layout } from './qcow2-layout.js';

/** A run of the image file: bytes (`release` once sent, when they came from a guest run), or a hole that reads as zeroes. */
export type ImageChunk = { kind: 'data'; data: Buffer; release?: () => void } | { kind: 'hole'; length: number };

/** The layout of the image for a disk of `virtualSize` bytes whose data lies in `runs`. */
export function imageLayout(virtualSize: number, runs: readonly ClusterRun[]): Qcow2Layout {
  return planQcow2({ virtualSize, runs });
}

/**
 * Yields the whole file of `layout`: its metadata, then the stored clusters filled from
 * `runs` (the disk's runs in guest order; data only inside the layout's clusters).
 */
export async function* qcow2ImageChunks(layout: Qcow2Layout, runs: AsyncIterable<GuestRun>): AsyncGenerator<ImageChunk> {
  for await (const cluster of metadataInTurns(layout)) yield { kind: 'data', data: cluster };
  const stored = layout.input.runs;
  let written = layout.dataOffset;
  let run = 0;
  let runHost = layout.dataOffset;
  for await (const piece of runs) {
    if (piece.kind !== 'data') continue;
    let offset = piece.offset;
    let data = piece.data;
    // A run may land in several stored ranges: its memory goes back once every piece is released.
    let pieces = 1;
    const releasePiece = () => {
      if (--pieces === 0) piece.release();
    };
    while (data.length > 0) {
      while (run < stored.length && offset >= (stored[run]!.start + stored[run]!.count) * CLUSTER_SIZE) {
        runHost += stored[run]!.count * CLUSTER_SIZE;
        run++;
      }
      const start = run < stored.length ? stored[run]!.start * CLUSTER_SIZE : Number.POSITIVE_INFINITY;
      if (offset < start) throw new Error(`data at guest offset ${offset} lies outside the image's stored clusters`);
      const host = runHost + (offset - start);
      if (host < written) throw new Error(`data at guest offset ${offset} arrived out of order`);
      if (host > written) yield { kind: 'hole', length: host - written };
      const take = Math.min(data.length, (stored[run]!.start + stored[run]!.count) * CLUSTER_SIZE - offset);
      pieces++;
      yield { kind: 'data', data: data.subarray(0, take), release: once(releasePiece) };
      written = host + take;
      offset += take;
      data = data.subarray(take);
    }
    releasePiece();
  }
  if (layout.fileSize > written) yield { kind: 'hole', length: layout.fileSize - written };
}
