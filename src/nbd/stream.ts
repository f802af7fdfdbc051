import { pageAlignedBuffers, wasmMemory, type AlignedMemorySource } from '../common/page-aligned.js';
import { PLACE, type PlacingReadSink, type ReadSink } from './connection.js';
import type { ByteRange, Extent } from './extents.js';
import { AllocationFlags, BASE_ALLOCATION, DirtyBitmapFlags } from './protocol.js';
import { shareSignal } from './shared-signal.js';
import { returnReceived } from './slabs.js';

/** A piece of the export: bytes read, or a range known to read as zeroes (never sent). */
export type ReadChunk =
  | {
      kind: 'data';
      offset: number;
      length: number;
      data: Buffer;
      /**
       * Present with `reuseMemory: 'until-release'`: gives `data`'s memory back for
       * reuse. Call it exactly once, when nothing reads `data` any more.
       */
      release?: () => void;
    }
  | { kind: 'hole'; offset: number; length: number };

/** Options of `NbdClient.chunks()` and `createReadStream()`. */
export interface ReadStreamOptions {
  /** Part of the export to consider; the whole export by default. */
  range?: ByteRange;
  /**
   * Meta context that decides which extents are read, e.g. `qemu:dirty-bitmap:backup-vda`.
   * Without it, everything is read, and `base:allocation` (when negotiated) turns zero
   * extents into holes without reading them.
   */
  context?: string;
  /** Which extents of `context` to read; by default the dirty ones of a dirty bitmap, else all. */
  select?: (extent: Extent) => boolean;
  /** Bytes read ahead while earlier chunks wait for the consumer. */
  readAhead?: number;
  /**
   * Reuse receive memory, which saves the page faults and garbage collections that fresh
   * memory for every megabyte costs. `true`: a data chunk's `data` is valid only until
   * the next chunk is asked for (copy what must outlive that). `'until-release'`: valid
   * until the consumer calls the chunk's `release()`, for consumers that keep a few
   * chunks in flight (positioned file writes). Off by default: `data` stays valid.
   */
  reuseMemory?: boolean | 'until-release';
  /**
   * Where `'until-release'` reads land: a function that returns page-aligned memory of
   * at least the bytes asked for, called once per few megabytes. WebAssembly memory by
   * default. A consumer writing with O_DIRECT may pass memory backed by huge pages, which
   * reaches the disk in fewer, larger requests (the backup engine does). Streams given
   * the same function share the buffers carved from its memory: one function for the
   * reads of one file lets each range's stream reuse what the last one released.
   */
  alignedMemory?: AlignedMemorySource;
  signal?: AbortSignal;
}

/** What the stream needs from the client. */
export interface ChunkSource {
  readonly size: number;
  readonly requestSize: number;
  readonly maxBytesInFlight: number;
  hasMetaContext(name: string): boolean;
  extents(context: string, range: ByteRange, options: { signal?: AbortSignal }): AsyncIterable<Extent>;
  readRequest(offset: number, length: number, sink: ReadSink, signal?: AbortSignal): Promise<void>;
}

/** Bounds the holes and small reads planned ahead, which cost memory but no bytes. */
const MAX_QUEUED_CHUNKS = 4096;

interface Segment {
  offset: number;
  length: number;
  read: boolean;
}

interface InFlightRead {
  length: number;
  done: Promise<void>;
  pieces: ReadChunk[];
  outOfOrder: boolean;
  /** The page-aligned memory the read landed in (`'until-release'`), lent out with its pieces. */
  memory?: LentMemory;
}

/** Request-sized buffers that each start on a page, reused as their readers give them back. */
class AlignedBuffers {
  readonly #free: Buffer[] = [];
  constructor(
    readonly size: number,
    readonly memory: AlignedMemorySource,
  ) {}

  take(): Buffer {
    const free = this.#free.pop();
    if (free) return free;
    // A few at a time: each group is one memory mapping of its own.
    const group = pageAlignedBuffers(ALIGNED_GROUP, this.size, this.memory);
    const first = group.pop()!;
    this.#free.push(...group);
    return first;
  }

  give(buffer: Buffer): void {
    this.#free.push(buffer);
  }
}

const ALIGNED_GROUP = 8;

/** The buffers of each memory source a caller passed, by size, for as long as the caller keeps the source. */
const sharedAligned = new WeakMap<AlignedMemorySource, Map<number, AlignedBuffers>>();

function alignedBuffersOf(memory: AlignedMemorySource | undefined, size: number): AlignedBuffers {
  if (memory === undefined) return new AlignedBuffers(size, wasmMemory);
  let bySize = sharedAligned.get(memory);
  if (!bySize) sharedAligned.set(memory, (bySize = new Map()));
  let buffers = bySize.get(size);
  if (!buffers) bySize.set(size, (buffers = new AlignedBuffers(size, memory)));
  return buffers;
}

/** One read's aligned buffer, back to its pool once every data piece is released. */
interface LentMemory {
  buffer: Buffer;
  pool: AlignedBuffers;
  /** Data pieces handed out and not released, plus one while pieces are still being handed out. */
  holders: number;
}

function giveBack(memory: LentMemory): void {
  if (--memory.holders === 0) memory.pool.give(memory.buffer);
}

function defaultSelect(context: string): (extent: Extent) => boolean {
  if (context.startsWith('qemu:dirty-bitmap:')) return (extent) => (extent.flags & DirtyBitmapFlags.DIRTY) !== 0;
  return () => true;
}

async function* plan(source: ChunkSource, range: ByteRange, options: ReadStreamOptions): AsyncGenerator<Segment> {
  const signalOption = options.signal ? { signal: options.signal } : {};
  if (options.context !== undefined) {
    const select = options.select ?? defaultSelect(options.context);
    for await (const extent of source.extents(options.context, range, signalOption)) {
      if (select(extent)) yield { offset: extent.offset, length: extent.length, read: true };
    }
  } else if (source.hasMetaContext(BASE_ALLOCATION)) {
    for await (const extent of source.extents(BASE_ALLOCATION, range, signalOption)) {
      yield { offset: extent.offset, length: extent.length, read: (extent.flags & AllocationFlags.ZERO) === 0 };
    }
  } else {
    yield { offset: range.offset, length: range.length, read: true };
  }
}

/** A chunk's `release()`: gives its memory back once, and refuses a second call. */
function releaseOnce(giveMemoryBack: () => void): () => void {
  let released = false;
  return () => {
    if (released) throw new Error('a read chunk was released twice');
    released = true;
    giveMemoryBack();
  };
}

function startRead(source: ChunkSource, offset: number, length: number, signal: AbortSignal | undefined, lend: boolean): InFlightRead {
  const pieces: ReadChunk[] = [];
  const flight: InFlightRead = { length, done: Promise.resolve(), pieces, outOfOrder: false };
  let nextOffset = offset;
  const note = (at: number, size: number): void => {
    if (at !== nextOffset) flight.outOfOrder = true;
    nextOffset = at + size;
  };
  const sink: ReadSink = {
    holds: lend ? 'lend' : 'keep',
    data(at, data) {
      note(at, data.length);
      pieces.push({ kind: 'data', offset: at, length: data.length, data });
    },
    hole(at, size) {
      note(at, size);
      pieces.push({ kind: 'hole', offset: at, length: size });
    },
  };
  flight.done = source.readRequest(offset, length, sink, signal);
  // Failures surface when the consumer reaches this read; until then do not report them twice.
  flight.done.catch(() => {});
  return flight;
}

/**
 * A read whose payload the socket puts straight into a page-aligned buffer of its own
 * (no copy out of receive slabs), handed on as views of that buffer. Aligned memory is
 * what O_DIRECT writes take, and the kernel copies into it faster.
 */
function startPlacedRead(source: ChunkSource, offset: number, length: number, signal: AbortSignal | undefined, pool: AlignedBuffers): InFlightRead {
  const buffer = pool.take();
  const target = buffer.subarray(0, length);
  const pieces: ReadChunk[] = [];
  const flight: InFlightRead = { length, done: Promise.resolve(), pieces, outOfOrder: false, memory: { buffer, pool, holders: 1 } };
  let nextOffset = offset;
  const note = (at: number, size: number): void => {
    if (at !== nextOffset) flight.outOfOrder = true;
    nextOffset = at + size;
  };
  const sink: PlacingReadSink = {
    holds: 'call',
    data(at, bytes) {
      const place = at - offset;
      // Read there directly by the socket, or a few bytes that came with a reply header.
      if (bytes.buffer !== target.buffer || bytes.byteOffset !== target.byteOffset + place) target.set(bytes, place);
      note(at, bytes.length);
      const last = pieces.at(-1);
      if (last?.kind === 'data' && last.offset + last.length === at) {
        last.length += bytes.length;
        last.data = target.subarray(last.offset - offset, last.offset - offset + last.length);
      } else {
        pieces.push({ kind: 'data', offset: at, length: bytes.length, data: target.subarray(place, place + bytes.length) });
      }
    },
    hole(at, size) {
      note(at, size);
      pieces.push({ kind: 'hole', offset: at, length: size });
    },
    [PLACE](at, size) {
      return target.subarray(at - offset, at - offset + size);
    },
  };
  flight.done = source.readRequest(offset, length, sink, signal);
  flight.done.catch(() => {});
  return flight;
}

/**
 * Reads the chosen extents in offset order, with up to `readAhead` bytes of requests
 * in flight across all connections, handing on received memory without copying it.
 */
export async function* readChunks(source: ChunkSource, options: ReadStreamOptions = {}): AsyncGenerator<ReadChunk> {
  const range = options.range ?? { offset: 0, length: source.size };
  const { offset, length } = range;
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > source.size) {
    throw new RangeError(`range ${range.offset}+${range.length} lies outside the export (${source.size} bytes)`);
  }
  const readAhead = Math.max(options.readAhead ?? source.maxBytesInFlight, source.requestSize);
  const shared = shareSignal(options.signal);
  const signal = shared.signal;
  const reuse = options.reuseMemory === true || options.reuseMemory === 'until-release';
  const releasedByConsumer = options.reuseMemory === 'until-release';
  // Consumers that keep chunks until they release them get page-aligned memory per read.
  const aligned = releasedByConsumer ? alignedBuffersOf(options.alignedMemory, source.requestSize) : undefined;
  const queue: Array<InFlightRead | ReadChunk> = [];
  let queuedBytes = 0;
  const segments = plan(source, range, signal ? { ...options, signal } : options);
  let pendingSegment: Segment | undefined;
  let segmentsDone = false;

  const fill = async (): Promise<void> => {
    while (!segmentsDone && queuedBytes < readAhead && queue.length < MAX_QUEUED_CHUNKS) {
      if (!pendingSegment) {
        const next = await segments.next();
        if (next.done) {
          segmentsDone = true;
          return;
        }
        if (next.value.length === 0) continue;
        pendingSegment = next.value;
      }
      const segment = pendingSegment;
      if (!segment.read) {
        queue.push({ kind: 'hole', offset: segment.offset, length: segment.length });
        pendingSegment = undefined;
        continue;
      }
      const length = Math.min(segment.length, source.requestSize);
      queue.push(aligned ? startPlacedRead(source, segment.offset, length, signal, aligned) : startRead(source, segment.offset, length, signal, reuse));
      queuedBytes += length;
      segment.offset += length;
      segment.length -= length;
      if (segment.length === 0) pendingSegment = undefined;
    }
  };

  try {
    for (;;) {
      await fill();
      const head = queue.shift();
      if (!head) return;
      if ('kind' in head) {
        yield head;
        continue;
      }
      await head.done;
      queuedBytes -= head.length;
      // Keep the server busy while the consumer deals with this read's pieces.
      await fill();
      if (head.outOfOrder) head.pieces.sort((a, b) => a.offset - b.offset);
      const memory = head.memory;
      for (const piece of head.pieces) {
        if (memory && piece.kind === 'data') {
          memory.holders++;
          yield { ...piece, release: releaseOnce(() => giveBack(memory)) };
          continue;
        }
        if (releasedByConsumer && piece.kind === 'data') {
          yield { ...piece, release: releaseOnce(() => returnReceived(piece.data)) };
          continue;
        }
        yield piece;
        // The consumer asked for the next chunk: it is done with this one's memory.
        if (reuse && piece.kind === 'data') returnReceived(piece.data);
      }
      // Every piece is out: the buffer returns once the last one is released.
      if (memory) giveBack(memory);
    }
  } finally {
    shared.release();
    await segments.return(undefined);
  }
}
