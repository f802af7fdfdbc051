// One sequential read of a chain file that does two jobs at once: every byte goes into
// the file's checksum, and the bytes the copy plan assigns to the output are handed to
// it as they pass. Reads are large and one ahead of the work; writes run on the
// addon's worker threads while the next chunk is read; a read buffer returns to the
// pool once the writes that point into it have landed, so memory stays bounded.
import type { FileHandle } from 'node:fs/promises';
import type { FileCopyPieces } from './chain-copy-plan.js';
import { createChecksum, type ChecksumAlgorithm } from '../checksum.js';
import { BackupSetError, throwIfAborted } from '../errors.js';
import { inflateCluster } from './qcow2-reader.js';
import { pageAlignedBuffers } from '../../common/page-aligned.js';
import { directWriteMemory } from './direct-write-memory.js';

/** Where guest bytes go; buffers stay untouched until the promise settles. */
export interface GuestWriter {
  write(buffers: readonly Buffer[], guestOffset: number): Promise<void>;
}

export const CHUNK_BYTES = 8 * 2 ** 20;
/** Current, previous (a compressed stream may start there), next, and writes in flight. */
const POOL_BUFFERS = 6;
/** Inflated clusters waiting for their write, at most. */
const INFLATED_BYTES_IN_FLIGHT = 32 * 2 ** 20;
const INFLATES_IN_FLIGHT = 4;
/** iovecs per write; the kernel takes 1024 at once. */
const PIECES_PER_WRITE = 1024;

class ReadBuffer {
  refs = 0;
  constructor(
    readonly bytes: Buffer,
    private readonly pool: ReadBufferPool,
  ) {}

  retain(): void {
    this.refs++;
  }

  release(): void {
    if (--this.refs === 0) this.pool.give(this);
  }
}

/** Read buffers shared by the files of one restore, so none is allocated per chunk. */
export class ReadBufferPool {
  readonly #free: ReadBuffer[] = [];
  readonly #waiting: Array<(buffer: ReadBuffer) => void> = [];

  constructor(
    readonly bufferBytes = CHUNK_BYTES,
    count = POOL_BUFFERS,
  ) {
    // On page boundaries: the kernel copies the file into them a third of the time it takes
    // into Node's own allocations, and the writer can hand their pieces to the disk directly
    // (in huge pages: see direct-write-memory.ts).
    for (const bytes of pageAlignedBuffers(count, bufferBytes, directWriteMemory)) this.#free.push(new ReadBuffer(bytes, this));
  }

  async acquire(): Promise<ReadBuffer> {
    const buffer = this.#free.pop() ?? (await new Promise<ReadBuffer>((resolve) => this.#waiting.push(resolve)));
    buffer.refs = 1;
    return buffer;
  }

  give(buffer: ReadBuffer): void {
    const waiter = this.#waiting.shift();
    if (waiter) waiter(buffer);
    else this.#free.push(buffer);
  }
}

export interface StreamFileOptions {
  /** Name in messages. */
  name: string;
  signal?: AbortSignal;
  /** Called after each read with its byte count. */
  onRead?: (bytes: number) => void;
}

export interface StreamedFile {
  /** `algorithm:hex` of the bytes read. */
  checksum: string;
  bytesRead: number;
}

/**
 * Reads `size` bytes of `file` from offset 0, checksumming all of them and writing
 * the plan's pieces to `output` (with `pieces` null, only checksums). Every write has
 * settled when this returns or throws.
 */
export async function streamChainFile(
  file: FileHandle,
  size: number,
  algorithm: ChecksumAlgorithm,
  pieces: FileCopyPieces | null,
  output: GuestWriter | null,
  pool: ReadBufferPool,
  options: StreamFileOptions,
): Promise<StreamedFile> {
  const chunkBytes = pool.bufferBytes;
  if (pieces !== null && pieces.chunkBytes !== chunkBytes) throw new Error(`planned for ${pieces.chunkBytes}-byte chunks, reading ${chunkBytes}`);
  const hash = createChecksum(algorithm);
  const writes = new WriteTracker();
  const chunkCount = Math.ceil(size / chunkBytes);
  let bytesRead = 0;

  const readChunk = async (index: number): Promise<{ buffer: ReadBuffer; length: number }> => {
    const buffer = await pool.acquire();
    try {
      const position = index * chunkBytes;
      const length = Math.min(chunkBytes, size - position);
      for (let done = 0; done < length;) {
        const { bytesRead: got } = await file.read(buffer.bytes, done, length - done, position + done);
        if (got === 0)
          throw new BackupSetError(
            'CHAIN_BROKEN',
            `${options.name}: the file ended at ${position + done} bytes while ${size} were being read (did it change during the restore?)`,
          );
        done += got;
        options.onRead?.(got);
      }
      return { buffer, length };
    } catch (error) {
      buffer.release();
      throw error;
    }
  };

  let next: Promise<{ buffer: ReadBuffer; length: number }> | null = chunkCount > 0 ? readChunk(0) : null;
  let previous: ReadBuffer | null = null;
  try {
    for (let chunk = 0; chunk < chunkCount; chunk++) {
      const current = await next!;
      next = null;
      try {
        throwIfAborted(options.signal);
        writes.throwIfFailed();
        if (chunk + 1 < chunkCount) {
          next = readChunk(chunk + 1);
          next.catch(() => undefined);
        }
        const bytes = current.buffer.bytes.subarray(0, current.length);
        hash.update(bytes);
        bytesRead += current.length;
        if (pieces !== null && output !== null) {
          writeDataPieces(pieces, chunk, current.buffer, output, writes);
          await writeCompressedPieces(pieces, chunk, current.buffer, previous, output, writes, options.name);
        }
      } catch (error) {
        current.buffer.release();
        throw error;
      }
      previous?.release();
      previous = current.buffer;
    }
    await writes.settle();
    writes.throwIfFailed();
  } finally {
    previous?.release();
    if (next !== null)
      await next.then(
        (chunk) => chunk.buffer.release(),
        () => undefined,
      );
    await writes.settle();
  }
  return { checksum: hash.digest(), bytesRead };
}

function writeDataPieces(pieces: FileCopyPieces, chunk: number, buffer: ReadBuffer, output: GuestWriter, writes: WriteTracker): void {
  const { bucketStart, hostOffset, guestOffset, length } = pieces.data;
  const chunkStart = chunk * pieces.chunkBytes;
  let batch: Buffer[] = [];
  let batchGuest = 0;
  let batchEnd = 0;
  const flush = () => {
    if (batch.length === 0) return;
    buffer.retain();
    writes.track(output.write(batch, batchGuest), () => buffer.release());
    batch = [];
  };
  for (let index = bucketStart[chunk]!; index < bucketStart[chunk + 1]!; index++) {
    const from = hostOffset[index]! - chunkStart;
    const slice = buffer.bytes.subarray(from, from + length[index]!);
    // Pieces that continue each other in the guest go out as one write.
    if (batch.length > 0 && guestOffset[index] === batchEnd && batch.length < PIECES_PER_WRITE) {
      batch.push(slice);
    } else {
      flush();
      batch = [slice];
      batchGuest = guestOffset[index]!;
    }
    batchEnd = guestOffset[index]! + length[index]!;
  }
  flush();
}

async function writeCompressedPieces(
  pieces: FileCopyPieces,
  chunk: number,
  current: ReadBuffer,
  previous: ReadBuffer | null,
  output: GuestWriter,
  writes: WriteTracker,
  name: string,
): Promise<void> {
  const { bucketStart, hostOffset, streamLength, guestOffset, length, skip } = pieces.compressed;
  const first = bucketStart[chunk]!;
  const end = bucketStart[chunk + 1]!;
  if (first === end) return;
  const chunkStart = chunk * pieces.chunkBytes;
  const inflating = new Set<Promise<void>>();
  for (let index = first; index < end; index++) {
    const start = hostOffset[index]!;
    const stop = start + streamLength[index]!;
    let stream: Buffer;
    if (start >= chunkStart) {
      stream = current.bytes.subarray(start - chunkStart, stop - chunkStart);
    } else {
      // Begins in the previous chunk: that buffer is still held for this.
      const previousStart = chunkStart - pieces.chunkBytes;
      if (previous === null || start < previousStart) throw new Error(`compressed stream at ${start} begins before the chunk held`);
      stream = Buffer.concat([previous.bytes.subarray(start - previousStart), current.bytes.subarray(0, stop - chunkStart)]);
    }
    const guest = guestOffset[index]!;
    const from = skip[index]!;
    const bytes = length[index]!;
    const task = inflateCluster(
      stream,
      pieces.clusterSize,
      () => `${name}: compressed cluster at ${start} (guest offset ${guest - from})`,
      pieces.compression,
    ).then(async (inflated) => {
      await writes.roomFor(bytes);
      writes.track(output.write([inflated.subarray(from, from + bytes)], guest), () => undefined, bytes);
    });
    const settled = task.then(
      () => void inflating.delete(settled),
      (error: unknown) => {
        inflating.delete(settled);
        writes.fail(error);
      },
    );
    inflating.add(settled);
    if (inflating.size >= INFLATES_IN_FLIGHT) await Promise.race(inflating);
    writes.throwIfFailed();
  }
  // The streams point into the read buffers, which are recycled after this chunk.
  await Promise.all(inflating);
  writes.throwIfFailed();
}

/** Writes in flight: remembers the first failure, and bounds memory written from copies. */
class WriteTracker {
  readonly #pending = new Set<Promise<void>>();
  #failure: { error: unknown } | null = null;
  #ownedBytes = 0;
  readonly #roomWaiters: Array<() => void> = [];

  track(write: Promise<void>, done: () => void, ownedBytes = 0): void {
    this.#ownedBytes += ownedBytes;
    const settled = write
      .then(
        () => undefined,
        (error: unknown) => this.fail(error),
      )
      .finally(() => {
        this.#pending.delete(settled);
        this.#ownedBytes -= ownedBytes;
        done();
        while (this.#roomWaiters.length > 0 && this.#ownedBytes < INFLATED_BYTES_IN_FLIGHT) this.#roomWaiters.shift()!();
      });
    this.#pending.add(settled);
  }

  /** Waits until copies of `bytes` more stay within the bound. */
  async roomFor(bytes: number): Promise<void> {
    while (this.#ownedBytes > 0 && this.#ownedBytes + bytes > INFLATED_BYTES_IN_FLIGHT) {
      await new Promise<void>((resolve) => this.#roomWaiters.push(resolve));
    }
  }

  fail(error: unknown): void {
    this.#failure ??= { error };
  }

  throwIfFailed(): void {
    if (this.#failure !== null) throw this.#failure.error;
  }

  async settle(): Promise<void> {
    while (this.#pending.size > 0) await Promise.allSettled([...this.#pending]);
  }
}
