import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { nativeAddon } from '../libvirt/native.js';
import { abortedError, throwIfAborted } from './errors.js';

/**
 * Backup files are checksummed to catch damage (bit rot, truncation, a bad copy), not
 * tampering: whoever can change a file can change the manifest too. XXH3-128 does that
 * job at memory speed, so hashing a file as it streams in costs the backup nothing,
 * where sha256 costs a core for as long as the copy runs. Sets written before keep
 * their sha256 checksums and are verified with sha256.
 */
export type ChecksumAlgorithm = 'xxh128' | 'sha256';

/** What new backup files are checksummed with. */
export const DEFAULT_CHECKSUM_ALGORITHM: ChecksumAlgorithm = 'xxh128';

/** A checksum as stored in the manifest: `xxh128:<32 hex digits>` or `sha256:<64 hex digits>`. */
export const CHECKSUM_PATTERN = /^(?:xxh128:[0-9a-f]{32}|sha256:[0-9a-f]{64})$/;

/** A checksum being computed over content that arrives in pieces. */
export interface Checksum {
  /** Feeds the next bytes of the content. */
  update(bytes: Uint8Array): void;
  /** `algorithm:hex`; call once, after the last update. */
  digest(): string;
}

/** An incremental checksum of the given algorithm (XXH3-128 by default), fed with `update()` and read with `digest()`. */
export function createChecksum(algorithm: ChecksumAlgorithm = DEFAULT_CHECKSUM_ALGORITHM): Checksum {
  if (algorithm === 'xxh128') {
    const hash = new (nativeAddon().Xxh128)();
    return { update: (bytes) => hash.update(bytes), digest: () => `xxh128:${hash.digest()}` };
  }
  if (algorithm === 'sha256') {
    const hash = createHash('sha256');
    return { update: (bytes) => void hash.update(bytes), digest: () => `sha256:${hash.digest('hex')}` };
  }
  throw new TypeError(`unknown checksum algorithm '${String(algorithm)}' (known: xxh128, sha256)`);
}

/** The algorithm a stored checksum was made with. */
export function checksumAlgorithm(checksum: string): ChecksumAlgorithm {
  if (!CHECKSUM_PATTERN.test(checksum)) throw new TypeError(`not a checksum: '${checksum}' (expected xxh128:<32 hex> or sha256:<64 hex>)`);
  return checksum.slice(0, checksum.indexOf(':')) as ChecksumAlgorithm;
}

/** Options of `checksumFile()`. */
export interface ChecksumOptions {
  signal?: AbortSignal;
  /** Called as bytes are hashed, with the running total. */
  onProgress?: (bytesRead: number) => void;
}

/** Read buffer size: large enough for throughput on big images, small enough to stay bounded. */
const CHUNK_BYTES = 4 << 20;

/** A file's checksum (`algorithm:hex`), reading it in fixed-size chunks. */
export async function checksumFile(path: string, algorithm: ChecksumAlgorithm = DEFAULT_CHECKSUM_ALGORITHM, options: ChecksumOptions = {}): Promise<string> {
  throwIfAborted(options.signal);
  const hash = createChecksum(algorithm);
  const stream = createReadStream(path, { highWaterMark: CHUNK_BYTES });
  const onAbort = (): void => {
    stream.destroy(abortedError(options.signal!));
  };
  options.signal?.addEventListener('abort', onAbort, { once: true });
  let bytesRead = 0;
  try {
    for await (const chunk of stream) {
      const buffer = chunk as Buffer;
      hash.update(buffer);
      bytesRead += buffer.length;
      options.onProgress?.(bytesRead);
    }
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
    stream.destroy();
  }
  throwIfAborted(options.signal);
  return hash.digest();
}

/** Checks `path` against a stored checksum, with that checksum's algorithm; returns the actual one. */
export async function fileChecksumMatches(path: string, expected: string, options: ChecksumOptions = {}): Promise<{ matches: boolean; actual: string }> {
  const actual = await checksumFile(path, checksumAlgorithm(expected), options);
  return { matches: actual === expected, actual };
}
