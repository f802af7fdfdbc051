// What "the guest writes" between backups: data, one-byte patterns, zeroes and
// discards at random offsets, and how each one changes the raw reference that
// stands for the disk's true content.
import type { Rng } from './seeded-random.js';

export const MIN_WRITE_BYTES = 4 * 1024;
export const MAX_WRITE_BYTES = 64 * 1024 * 1024;
/** qemu-io and the block layer take any offset, but sectors are what a guest issues. */
const SECTOR = 512;

export type GuestWrite =
  /** Bytes of a random source file: content that differs from cluster to cluster. */
  | { kind: 'data'; disk: number; offset: number; length: number; source: number }
  /** One byte repeated: cheap, and a different byte per write. */
  | { kind: 'pattern'; disk: number; offset: number; length: number; pattern: number }
  /** `write -z`; with `unmap`, QEMU may deallocate instead of writing zeroes. */
  | { kind: 'zero'; disk: number; offset: number; length: number; unmap: boolean }
  | { kind: 'discard'; disk: number; offset: number; length: number };

export interface DiskGeometry {
  sizeBytes: number;
  /** The qcow2 cluster size of the running disk: what a discard can deallocate. */
  clusterBytes: number;
}

/** The random writes of one cycle: 1 to `maxWrites`, over every disk. */
export function planWrites(rng: Rng, disks: readonly DiskGeometry[], sourceCount: number, maxWrites = 6): GuestWrite[] {
  const count = rng.int(1, maxWrites);
  const writes: GuestWrite[] = [];
  for (let i = 0; i < count; i += 1) {
    const disk = rng.int(0, disks.length - 1);
    const size = disks[disk]!.sizeBytes;
    const wanted = Math.max(MIN_WRITE_BYTES, Math.round(rng.logUniform(MIN_WRITE_BYTES, MAX_WRITE_BYTES) / SECTOR) * SECTOR);
    const length = Math.min(wanted, size);
    const offset = rng.int(0, (size - length) / SECTOR) * SECTOR;
    const kind = rng.weighted([
      ['data', 35],
      ['pattern', 30],
      ['zero', 15],
      ['discard', 20],
    ] as const);
    switch (kind) {
      case 'data':
        writes.push({ kind, disk, offset, length, source: rng.int(0, sourceCount - 1) });
        break;
      case 'pattern':
        writes.push({ kind, disk, offset, length, pattern: rng.int(0, 255) });
        break;
      case 'zero':
        writes.push({ kind, disk, offset, length, unmap: rng.chance(0.5) });
        break;
      case 'discard':
        writes.push({ kind, disk, offset, length });
        break;
    }
  }
  return writes;
}

/** The qemu-io command that performs `write` on the running disk (through HMP). */
export function guestCommand(write: GuestWrite, sources: readonly string[]): string {
  const range = `${write.offset} ${write.length}`;
  switch (write.kind) {
    case 'data':
      return `write -q -s ${sources[write.source]!} ${range}`;
    case 'pattern':
      return `write -q -P 0x${write.pattern.toString(16)} ${range}`;
    case 'zero':
      return `write -q -z${write.unmap ? ' -u' : ''} ${range}`;
    case 'discard':
      return `discard -q ${range}`;
  }
}

/**
 * The part of a discard that reads back as zeroes from a qcow2 image without a backing
 * file, opened with discard=unmap: whole clusters only. QEMU 7.2 splits a discard at
 * cluster boundaries and the qcow2 driver refuses the partial head and tail (ENOTSUP,
 * which the block layer ignores), so their bytes keep their data.
 * test/soak/guest-write-model.test.ts checks this against QEMU itself.
 */
export function discardedRange(offset: number, length: number, clusterBytes: number): { offset: number; length: number } | null {
  const start = Math.ceil(offset / clusterBytes) * clusterBytes;
  const end = Math.floor((offset + length) / clusterBytes) * clusterBytes;
  return end > start ? { offset: start, length: end - start } : null;
}

/** The qemu-io commands that make a raw reference image receive the same change. */
export function referenceCommands(write: GuestWrite, sources: readonly string[], geometry: DiskGeometry): string[] {
  switch (write.kind) {
    case 'data':
    case 'pattern':
      return [guestCommand(write, sources)];
    case 'zero':
      return [`write -q -z ${write.offset} ${write.length}`];
    case 'discard': {
      const zeroed = discardedRange(write.offset, write.length, geometry.clusterBytes);
      return zeroed === null ? [] : [`write -q -z ${zeroed.offset} ${zeroed.length}`];
    }
  }
}

export function describeWrite(write: GuestWrite): string {
  const what =
    write.kind === 'data'
      ? `data from source ${write.source}`
      : write.kind === 'pattern'
        ? `pattern 0x${write.pattern.toString(16)}`
        : write.kind === 'zero'
          ? `zeroes${write.unmap ? ' (may unmap)' : ''}`
          : 'discard';
  return `disk ${write.disk}: ${what} at ${write.offset} length ${write.length}`;
}
