// The pumps behind StorageVolume.upload() and download(): a stream fed from (or
// drained into) async iterables of data and holes, with one send or receive on a
// worker thread while the JS side prepares the next, and the stream aborted on any
// failure so the daemon drops its half of the transfer.
import { RecycledBuffers } from '../common/recycled-buffers.js';
import { StorageVolumeDownloadFlags, StorageVolumeUploadFlags, StreamRecvFlags } from './constants.js';
import type { NativeStorageVolume } from './native.js';
import type { Stream } from './stream.js';

/** A run of a volume's bytes: data, or a hole (bytes that read as zeroes and need not be stored). */
export type VolumeChunk =
  | {
      kind: 'data';
      data: Uint8Array;
      /**
       * Upload: called by `upload()` once the bytes are sent and may be changed or reused.
       * Download: call it once done with the bytes, and `download()` fills that memory
       * again instead of allocating more; a chunk never released stays the caller's.
       */
      release?: () => void;
    }
  | { kind: 'hole'; length: number };

/** The part of a volume an upload or download covers. */
export interface VolumeTransferRange {
  /** Where in the volume to start (default 0). */
  offset?: number;
  /** Bytes to transfer; 0 or absent: up to the end of the volume. */
  length?: number;
  /** Holes travel as holes (`SPARSE_STREAM`, default); false sends and receives them as zeroes. */
  sparse?: boolean;
  signal?: AbortSignal;
}

/** Options of `StorageVolume.upload()`. */
export interface UploadOptions extends VolumeTransferRange {
  /** After each send: the totals so far. */
  onProgress?: (sent: UploadResult) => void;
}

/** What an upload sent: data bytes, and bytes skipped as holes. */
export interface UploadResult {
  /** Bytes sent as data. */
  dataBytes: number;
  /** Bytes sent as holes (or, not sparse, as zeroes counted in `dataBytes` instead). */
  holeBytes: number;
}

/** Options of `StorageVolume.download()`. */
export interface DownloadOptions extends VolumeTransferRange {
  /** Largest data chunk yielded (default 4 MiB). */
  chunkBytes?: number;
}

/** Data gathered into one send: fewer worker round trips for small chunks, no copies. */
const SEND_BATCH_BYTES = 8 * 2 ** 20;
const ZERO_BYTES = 2 ** 20;
const DEFAULT_CHUNK_BYTES = 4 * 2 ** 20;
// Released download chunks kept for the next receives.
const SPARE_CHUNKS = 4;

function describeChunk(value: unknown): string {
  return value === null ? 'null' : typeof value === 'object' ? JSON.stringify(Object.keys(value)) : typeof value;
}

/** Checks a chunk from a caller's source; the message names which one was wrong and how. */
function checkChunk(chunk: unknown, index: number): VolumeChunk {
  const value = chunk as Partial<VolumeChunk> | null;
  if (value !== null && typeof value === 'object') {
    if (value.kind === 'data' && value.data instanceof Uint8Array) return value as VolumeChunk;
    if (value.kind === 'hole' && Number.isSafeInteger(value.length) && (value.length as number) >= 0) return value as VolumeChunk;
  }
  throw new TypeError(
    `upload source chunk ${index} must be { kind: 'data', data: Uint8Array } or { kind: 'hole', length: whole number >= 0 }, got ${describeChunk(chunk)}`,
  );
}

/** Sends `source` into `volume` through `stream`; finishes the stream, or aborts it and rethrows. */
export async function uploadThrough(
  volume: NativeStorageVolume,
  stream: Stream,
  source: AsyncIterable<VolumeChunk> | Iterable<VolumeChunk>,
  options: UploadOptions,
): Promise<UploadResult> {
  const sparse = options.sparse !== false;
  const signal = options.signal;
  signal?.throwIfAborted();
  await volume.upload(stream.native, options.offset ?? 0, options.length ?? 0, sparse ? StorageVolumeUploadFlags.SPARSE_STREAM : 0);
  const sender = new PipelinedSender(stream, sparse, options.onProgress);
  try {
    let index = 0;
    for await (const raw of source) {
      signal?.throwIfAborted();
      const chunk = checkChunk(raw, index++);
      if (chunk.kind === 'hole') await sender.hole(chunk.length);
      else await sender.data(chunk.data, chunk.release);
    }
    signal?.throwIfAborted();
    await sender.drain();
    await stream.finish();
    return sender.totals;
  } catch (error) {
    await sender.settled();
    await stream.abort().catch(() => undefined);
    throw error;
  }
}

/**
 * Data gathered into batches, one send running on a worker thread while the next batch
 * is gathered; a failed send is seen when the next one is queued. Holes go as holes on a
 * sparse stream, as zeroes otherwise.
 */
class PipelinedSender {
  readonly totals: UploadResult = { dataBytes: 0, holeBytes: 0 };
  private inFlight: Promise<void> = Promise.resolve();
  private batch: Uint8Array[] = [];
  private releases: Array<() => void> = [];
  private batchBytes = 0;

  constructor(
    private readonly stream: Stream,
    private readonly sparse: boolean,
    private readonly onProgress: UploadOptions['onProgress'],
  ) {}

  async data(bytes: Uint8Array, release?: () => void): Promise<void> {
    if (bytes.length === 0) {
      release?.();
      return;
    }
    this.batch.push(bytes);
    if (release) this.releases.push(release);
    this.batchBytes += bytes.length;
    if (this.batchBytes >= SEND_BATCH_BYTES) await this.flush();
  }

  async hole(length: number): Promise<void> {
    if (length === 0) return;
    await this.flush();
    if (this.sparse) {
      await this.queue(() => this.stream.sendHole(length).then(() => this.count('holeBytes', length)));
      return;
    }
    const zeroes = Buffer.alloc(Math.min(length, ZERO_BYTES));
    for (let left = length; left > 0; left -= zeroes.length) await this.data(zeroes.subarray(0, Math.min(left, zeroes.length)));
  }

  /** Everything gathered sent, and every send done. */
  async drain(): Promise<void> {
    await this.flush();
    await this.inFlight;
  }

  /** The send in flight over, whether it worked or not. */
  async settled(): Promise<void> {
    await this.inFlight.catch(() => undefined);
  }

  private async flush(): Promise<void> {
    if (this.batchBytes === 0) return;
    const { batch, releases, batchBytes } = this;
    this.batch = [];
    this.releases = [];
    this.batchBytes = 0;
    await this.queue(() =>
      this.stream.send(batch).then(() => {
        for (const release of releases) release();
        this.count('dataBytes', batchBytes);
      }),
    );
  }

  /** Waits for the send before, then starts this one and lets it run in the background. */
  private async queue(send: () => Promise<void>): Promise<void> {
    await this.inFlight;
    this.inFlight = send();
    this.inFlight.catch(() => undefined);
  }

  private count(kind: keyof UploadResult, bytes: number): void {
    this.totals[kind] += bytes;
    this.onProgress?.({ ...this.totals });
  }
}

/** Yields `volume`'s bytes through `stream` as data and holes; aborts the stream if the caller stops early or it fails. */
export async function* downloadThrough(volume: NativeStorageVolume, stream: Stream, options: DownloadOptions): AsyncGenerator<VolumeChunk> {
  const sparse = options.sparse !== false;
  const chunkBytes = options.chunkBytes ?? DEFAULT_CHUNK_BYTES;
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes < 1) throw new RangeError(`chunkBytes must be a whole number >= 1, got ${String(options.chunkBytes)}`);
  const signal = options.signal;
  signal?.throwIfAborted();
  await volume.download(stream.native, options.offset ?? 0, options.length ?? 0, sparse ? StorageVolumeDownloadFlags.SPARSE_STREAM : 0);
  const flags = sparse ? StreamRecvFlags.STOP_AT_HOLE : 0;
  const memory = new RecycledBuffers(chunkBytes, SPARE_CHUNKS);
  const receive = () => {
    const buffer = memory.take();
    const received = stream.recv(buffer, flags).then((result) => ({ buffer, ...result }));
    received.catch(() => undefined);
    return received;
  };
  let finished = false;
  try {
    // The next receive runs on a worker thread while the caller handles this chunk.
    let next = receive();
    for (;;) {
      const { buffer, bytes, hole, end } = await next;
      signal?.throwIfAborted();
      if (!end) next = receive();
      if (bytes > 0) yield { kind: 'data', data: bytes === buffer.length ? buffer : buffer.subarray(0, bytes), release: memory.releaseOf(buffer) };
      else memory.giveBack(buffer);
      if (hole > 0) yield { kind: 'hole', length: hole };
      if (end) break;
      signal?.throwIfAborted();
    }
    await stream.finish();
    finished = true;
  } finally {
    if (!finished) await stream.abort().catch(() => undefined);
  }
}
