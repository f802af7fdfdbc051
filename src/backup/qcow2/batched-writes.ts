// The bytes of a file written front to back, gathered into large batches that the
// native FileWriter lands a few at a time on the thread pool (positioned writes),
// checksummed in the order they were appended.
import { pageAlignedBuffers } from '../../common/page-aligned.js';
import type { NativeFileWriter } from '../../libvirt/native.js';
import { CLUSTER_SIZE } from './qcow2-layout.js';

// Page-aligned, so that a batch with zeroes among aligned data can still go to the disk directly.
const ZEROES = pageAlignedBuffers(1, CLUSTER_SIZE * 16)[0]!.fill(0);
export const FLUSH_BYTES = 8 * 2 ** 20;
export const WRITES_IN_FLIGHT = 4;

/**
 * The file's bytes in order, gathered into batches of FLUSH_BYTES that the native
 * writer lands a few at a time on the thread pool (positioned writes).
 */
export class BatchedWrites {
  /** Bytes handed to append() so far: the file's size once all have landed. */
  appended = 0;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  // Receive memory of the pending pieces, given back once their write has landed.
  #pendingReleases: Array<() => void> = [];
  readonly #inFlight: Array<Promise<unknown>> = [];
  #issued = 0;
  // Writes finish in any order, but a chunk split over two batches is released with the
  // later one: releases wait for every earlier batch, or the earlier part of the chunk
  // could still be on its way to the file when its memory is reused.
  #earlierWritten: Promise<unknown> = Promise.resolve();

  constructor(
    readonly writer: NativeFileWriter,
    readonly path: string,
  ) {}

  async append(bytes: Buffer): Promise<void> {
    this.#pending.push(bytes);
    this.#pendingBytes += bytes.length;
    this.appended += bytes.length;
    if (this.#pendingBytes >= FLUSH_BYTES) await this.#flush();
  }

  /**
   * `length` bytes that read as zeroes and are never written: taken into the checksum,
   * left as a hole that a later append (or the file's size) closes.
   */
  async appendHole(length: number): Promise<void> {
    if (length === 0) return;
    await this.#flush();
    this.#issued += length;
    this.appended += length;
    const hashed = this.writer.hashHole(length);
    hashed.catch(() => undefined);
    this.#inFlight.push(hashed);
    while (this.#inFlight.length > WRITES_IN_FLIGHT) await this.#inFlight.shift();
  }

  async appendZeroes(length: number): Promise<void> {
    for (let left = length; left > 0; left -= ZEROES.length) await this.append(ZEROES.subarray(0, Math.min(left, ZEROES.length)));
  }

  /** `release` runs once everything appended so far has landed. */
  releaseAfterWrite(release: () => void): void {
    this.#pendingReleases.push(release);
  }

  /** Every byte appended so far is written. */
  async drain(): Promise<void> {
    await this.#flush();
    while (this.#inFlight.length > 0) await this.#inFlight.shift();
  }

  /** Waits for the writes still running, whatever their outcome (before the file is closed). */
  async settle(): Promise<void> {
    await Promise.allSettled(this.#inFlight);
  }

  /** The XXH3-128 of all bytes written, after the file's data is synced. */
  finish(): Promise<string> {
    return this.writer.finish();
  }

  async #flush(): Promise<void> {
    if (this.#pendingBytes === 0) return;
    const pieces = this.#pending;
    const releases = this.#pendingReleases;
    const position = this.#issued;
    const length = this.#pendingBytes;
    this.#issued += length;
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#pendingReleases = [];
    const written = this.writer.write(pieces, position).catch((error: NodeJS.ErrnoException) => {
      throw Object.assign(new Error(`writing ${length} bytes at ${position} of ${this.path}: ${error.message}`, { cause: error }), { code: error.code });
    });
    const done = Promise.all([written, this.#earlierWritten]).then(() => {
      for (const release of releases) release();
    });
    this.#earlierWritten = done;
    done.catch(() => undefined);
    this.#inFlight.push(done);
    while (this.#inFlight.length > WRITES_IN_FLIGHT) await this.#inFlight.shift();
  }
}
