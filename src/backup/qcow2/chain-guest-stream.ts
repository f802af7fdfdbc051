// A qcow2 chain read as one disk, front to back in guest order: what a stream of the
// disk (a volume upload) needs, where the positioned restore (chain-stream.ts) may
// write anywhere. Each file still has one cursor that only moves forward and hashes
// every byte it passes, so the checksum pass and the copy are one read; a range the
// cursor has already passed (a file whose clusters are not stored in guest order) is
// read again with a positioned read, and counted.
import type { FileHandle } from 'node:fs/promises';
import type { GuestOrderPlan } from './chain-copy-plan.js';
import { createChecksum, type Checksum, type ChecksumAlgorithm } from '../checksum.js';
import { BackupSetError, throwIfAborted } from '../errors.js';
import { inflateCluster } from './qcow2-reader.js';
import type { ClusterCompression } from './cluster-compression.js';
import { RecycledBuffers } from '../../common/recycled-buffers.js';

/**
 * A run of the disk: bytes that some file provides, or a range that reads as zeroes.
 * A consumer that calls a data run's `release` once done with its bytes lets the stream
 * fill that memory again; one that never calls it keeps the bytes for good.
 */
export type GuestRun = { kind: 'data'; offset: number; data: Buffer; release: () => void } | { kind: 'zero'; offset: number; length: number };

export interface GuestStreamFile {
  handle: FileHandle;
  size: number;
  algorithm: ChecksumAlgorithm;
  /** The image's cluster size: what a compressed cluster inflates to. */
  clusterSize: number;
  /** How its compressed clusters are compressed (default zlib). */
  compression?: ClusterCompression;
  /** Name in messages. */
  name: string;
}

export interface GuestStreamOptions {
  signal?: AbortSignal;
  /** Called after each read with its byte count (re-reads included). */
  onRead?: (bytes: number) => void;
  /** Largest data run yielded (default 4 MiB). */
  runBytes?: number;
}

export interface GuestStreamResult {
  /** `algorithm:hex` of each file's bytes, in chain order. */
  checksums: string[];
  /** Bytes the forward cursors read (each file once). */
  bytesRead: number;
  /** Bytes read a second time, for ranges stored out of guest order. */
  bytesReread: number;
}

/** Memory for the read-ahead of all files together. */
const READ_AHEAD_BYTES = 64 * 2 ** 20;
const MAX_CHUNK_BYTES = 8 * 2 ** 20;
const MIN_CHUNK_BYTES = 256 * 1024;
const DEFAULT_RUN_BYTES = 4 * 2 ** 20;
// Released runs kept for reuse: a consumer that sends one batch while it gathers the
// next has a handful out at a time.
const SPARE_RUNS = 8;

/** One file's forward cursor: a chunk in hand, the next one being read, every byte hashed once. */
class ForwardReader {
  readonly #file: GuestStreamFile;
  readonly #hash: Checksum;
  readonly #options: GuestStreamOptions;
  #current: Buffer;
  #spare: Buffer;
  #start = 0;
  #end = 0;
  #next: Promise<number> | null = null;
  bytesRead = 0;
  bytesReread = 0;

  constructor(file: GuestStreamFile, chunkBytes: number, options: GuestStreamOptions) {
    this.#file = file;
    this.#hash = createChecksum(file.algorithm);
    this.#options = options;
    this.#current = Buffer.allocUnsafeSlow(chunkBytes);
    this.#spare = Buffer.allocUnsafeSlow(chunkBytes);
  }

  /** Copies the file's bytes `[position, position + length)` into `target` at `at`. */
  async copy(position: number, length: number, target: Buffer, at: number): Promise<void> {
    while (length > 0) {
      if (position < this.#start) {
        // Already passed (and hashed): read it again where it is.
        const take = Math.min(length, this.#start - position);
        await this.#readFully(target, at, take, position);
        this.bytesReread += take;
        position += take;
        at += take;
        length -= take;
      } else if (position < this.#end) {
        const take = Math.min(length, this.#end - position);
        this.#current.copy(target, at, position - this.#start, position - this.#start + take);
        position += take;
        at += take;
        length -= take;
      } else if (!(await this.#advance())) {
        throw new BackupSetError('CHAIN_BROKEN', `${this.#file.name}: the file ended at ${this.#end} bytes while ${this.#file.size} were being read`);
      }
    }
  }

  /** Reads (and hashes) the rest of the file; the checksum of all of it. */
  async finish(): Promise<string> {
    while (await this.#advance()) throwIfAborted(this.#options.signal);
    return this.#hash.digest();
  }

  /** Moves to the next chunk; false at the end of the file. */
  async #advance(): Promise<boolean> {
    if (this.#end >= this.#file.size) return false;
    const length = await (this.#next ?? this.#read(this.#spare, this.#end));
    this.#next = null;
    [this.#current, this.#spare] = [this.#spare, this.#current];
    this.#start = this.#end;
    this.#end = this.#start + length;
    this.#hash.update(this.#current.subarray(0, length));
    this.bytesRead += length;
    if (this.#end < this.#file.size) {
      this.#next = this.#read(this.#spare, this.#end);
      this.#next.catch(() => undefined);
    }
    return true;
  }

  async #read(into: Buffer, position: number): Promise<number> {
    const length = Math.min(into.length, this.#file.size - position);
    await this.#readFully(into, 0, length, position);
    return length;
  }

  async #readFully(into: Buffer, at: number, length: number, position: number): Promise<void> {
    for (let done = 0; done < length;) {
      const { bytesRead } = await this.#file.handle.read(into, at + done, length - done, position + done);
      if (bytesRead === 0) {
        throw new BackupSetError(
          'CHAIN_BROKEN',
          `${this.#file.name}: the file ended at ${position + done} bytes while ${this.#file.size} were being read (did it change during the restore?)`,
        );
      }
      done += bytesRead;
      this.#options.onRead?.(bytesRead);
    }
  }

  /** Waits for a read still in flight, so the file can be closed. */
  async settle(): Promise<void> {
    await this.#next?.catch(() => undefined);
  }
}

/**
 * Streams the disk `plan` describes from `files` (base first): data runs of at most
 * `runBytes`, fresh buffers each, and zero runs between them, covering the whole
 * virtual size. `result()` is ready once the runs are exhausted: by then every file
 * was read to its end and hashed.
 */
export class ChainGuestStream {
  readonly #plan: GuestOrderPlan;
  readonly #files: readonly GuestStreamFile[];
  readonly #options: GuestStreamOptions;
  #result: GuestStreamResult | null = null;

  constructor(plan: GuestOrderPlan, files: readonly GuestStreamFile[], options: GuestStreamOptions = {}) {
    this.#plan = plan;
    this.#files = files;
    this.#options = options;
  }

  result(): GuestStreamResult {
    if (this.#result === null) throw new Error('the chain has not been streamed to its end yet');
    return this.#result;
  }

  async *runs(): AsyncGenerator<GuestRun> {
    const plan = this.#plan;
    const options = this.#options;
    const runBytes = options.runBytes ?? DEFAULT_RUN_BYTES;
    const chunkBytes = Math.max(MIN_CHUNK_BYTES, Math.min(MAX_CHUNK_BYTES, Math.floor(READ_AHEAD_BYTES / (2 * this.#files.length))));
    const readers = this.#files.map((file) => new ForwardReader(file, chunkBytes, options));
    const memory = new RecycledBuffers(runBytes, SPARE_RUNS);
    const handOut = (batch: Buffer, offset: number, length: number): GuestRun => ({
      kind: 'data',
      offset,
      data: length === batch.length ? batch : batch.subarray(0, length),
      release: memory.releaseOf(batch),
    });
    let batch: Buffer | null = null;
    let batchStart = 0;
    let batchLength = 0;
    let position = 0;
    try {
      for (let index = 0; index < plan.count; index++) {
        throwIfAborted(options.signal);
        const guest = plan.guestOffset[index]!;
        if (guest > position) {
          if (batch !== null) {
            yield handOut(batch, batchStart, batchLength);
            batch = null;
          }
          yield { kind: 'zero', offset: position, length: guest - position };
          position = guest;
        }
        const reader = readers[plan.layer[index]!]!;
        const length = plan.length[index]!;
        let source: Buffer | null = null;
        let sourceAt = 0;
        if (plan.compressed[index] === 1) {
          const stream = Buffer.allocUnsafe(plan.streamLength[index]!);
          await reader.copy(plan.hostOffset[index]!, stream.length, stream, 0);
          const file = this.#files[plan.layer[index]!]!;
          source = await inflateCluster(
            stream,
            file.clusterSize,
            () => `${file.name}: compressed cluster at ${plan.hostOffset[index]!} (guest offset ${guest})`,
            file.compression,
          );
          sourceAt = plan.skip[index]!;
        }
        for (let done = 0; done < length;) {
          if (batch === null) {
            batch = memory.take();
            batchStart = position;
            batchLength = 0;
          }
          const take = Math.min(length - done, runBytes - batchLength);
          if (source !== null) source.copy(batch, batchLength, sourceAt + done, sourceAt + done + take);
          else await reader.copy(plan.hostOffset[index]! + done, take, batch, batchLength);
          batchLength += take;
          done += take;
          position += take;
          if (batchLength === runBytes) {
            yield handOut(batch, batchStart, batchLength);
            batch = null;
          }
        }
      }
      if (batch !== null) yield handOut(batch, batchStart, batchLength);
      if (plan.virtualSize > position) yield { kind: 'zero', offset: position, length: plan.virtualSize - position };
      const checksums: string[] = [];
      for (const reader of readers) checksums.push(await reader.finish());
      this.#result = {
        checksums,
        bytesRead: readers.reduce((sum, reader) => sum + reader.bytesRead, 0),
        bytesReread: readers.reduce((sum, reader) => sum + reader.bytesReread, 0),
      };
    } finally {
      await Promise.all(readers.map((reader) => reader.settle()));
    }
  }
}
