import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import { Connection, PLACE, type PlacingReadSink, type ReadSink } from './connection.js';
import { abortReason, NbdConnectionError, NbdError, NbdProtocolError, NbdTimeoutError } from './errors.js';
import { decodeDescriptors, ExtentMerger, type ByteRange, type Extent } from './extents.js';
import { negotiate, OptionPhase, type BlockSizeLimits, type ExportInfo, type ExportListing } from './handshake.js';
import { BASE_ALLOCATION, Command, CommandFlags, Option, TransmissionFlags } from './protocol.js';
import { RequestScheduler } from './scheduler.js';
import { shareSignal } from './shared-signal.js';
import { SlabPool } from './slabs.js';
import { readChunks, type ChunkSource, type ReadChunk, type ReadStreamOptions } from './stream.js';
import type { NbdTlsOptions } from './tls.js';
import { openSocket, type Endpoint } from './transport.js';

interface CommonOptions {
  /** Upgrade with NBD_OPT_STARTTLS before anything else. */
  tls?: NbdTlsOptions;
  /** Aborts connecting (and the handshake). */
  signal?: AbortSignal;
  /**
   * Milliseconds a server may leave the client waiting (default 120000): connecting and
   * the whole handshake must finish within it, and once connected, a connection whose
   * server sends nothing for this long while requests wait fails with NbdTimeoutError
   * (every request on it rejects). 0 or Infinity waits forever. A slow but live server is
   * not cut off: any reply bytes restart the clock. Per-call `signal`s bound a single call.
   */
  stallTimeout?: number;
}

/** An NBD server: a Unix socket path, or a host and port, with TLS and timeout options. */
export type ServerAddress = ({ path: string } | { host: string; port: number }) & CommonOptions;

/** Options of `NbdClient.connect()`: the server's address, the export and the meta contexts, and how much to read at once. */
export type ConnectOptions = ServerAddress & {
  /** Defaults to the server's default export (""). */
  exportName?: string;
  /** Meta contexts to negotiate; defaults to `['base:allocation']`. */
  metaContexts?: readonly string[];
  /** Connections to open when the server advertises CAN_MULTI_CONN (default 4; 1 over TLS). */
  connections?: number;
  /** Requests in flight on each connection (default 16). */
  requestsPerConnection?: number;
  /** Payload bytes in flight across all connections (default 4 MiB; 8 MiB over TLS). */
  maxBytesInFlight?: number;
  /**
   * Largest READ sent, and WRITE unless `writeRequestSize` says otherwise; clamped to the
   * server's maximum block size (default 512 KiB).
   */
  requestSize?: number;
  /** Largest WRITE sent; clamped like `requestSize` (default: `requestSize` when given, else 256 KiB). */
  writeRequestSize?: number;
  /** Ask for structured replies (default true); needed for holes and meta contexts. */
  structuredReplies?: boolean;
};

/** An `AbortSignal` that cancels one request. */
export interface RequestSignalOption {
  signal?: AbortSignal;
}

/** Options of `NbdClient.read()`. */
export interface ReadOptions extends RequestSignalOption {
  /**
   * Memory to read into instead of a new Buffer: any `ArrayBufferView` (Buffer,
   * Uint8Array, DataView...), written from byte `intoOffset` on. The socket reads
   * payloads straight into it (no copy, no allocation), holes are zero-filled there.
   * Until the promise settles the client writes into it; what it holds after a
   * rejection is unspecified (only the requested part, never beyond it).
   */
  into?: ArrayBufferView;
  /** Byte offset in `into` where the data starts (default 0). */
  intoOffset?: number;
}

/** Options of `NbdClient.write()`. */
export interface WriteOptions extends RequestSignalOption {
  /** Force unit access: the data is on stable storage when the promise resolves. */
  fua?: boolean;
}

/** Options of `NbdClient.writeZeroes()`. */
export interface WriteZeroesOptions extends WriteOptions {
  /** The zeroes must be allocated, not punched as a hole. */
  noHole?: boolean;
  /** Fail with ENOTSUP rather than zero slowly. */
  fastZero?: boolean;
}

const TWO_GIB = 2 ** 31;
const DEFAULT_CONNECTIONS = 4;
const DEFAULT_REQUESTS_PER_CONNECTION = 16;
// Measured: more bytes in flight only adds fresh memory to fault in, not throughput.
const DEFAULT_MAX_BYTES_IN_FLIGHT = 4 * 1024 * 1024;
/**
 * Measured with qemu-nbd on 1 GiB, 16 reads of 2 MiB in flight: in 512 KiB requests
 * the server took 31-225 page faults for 2 GiB read and 0.48-0.63 s of CPU per GiB;
 * in 1 MiB requests it took 230 000-240 000 (every page of every request's buffer,
 * which its allocator maps and unmaps at that size once its heap has grown) and
 * 0.63-0.99 s, and the reads were up to 40 % slower. The same server code runs in
 * QEMU for a backup job's export. Received pieces are slab-sized (256 KiB) either way.
 */
const DEFAULT_REQUEST_SIZE = 512 * 1024;
/**
 * A write's payload costs the server more than a read's: it receives the whole request
 * into a buffer of its own before a worker thread copies it into the image. Measured
 * with qemu-nbd, 1 GiB written from memory: in 512 KiB requests it spent 0.73-0.92 s of
 * CPU and the writes took 0.73-0.92 s; in 256 KiB requests 0.55-0.62 s and 0.63-0.73 s
 * (nbdcopy's 256 KiB requests cost it 0.42-0.51 s).
 */
const DEFAULT_WRITE_REQUEST_SIZE = 256 * 1024;
/**
 * Over TLS a connection must keep more requests in flight, so the defaults put every
 * byte in flight on one connection. QEMU's NBD server leaves Nagle on, and over TLS it
 * sends each 16 KiB record on its own: below the loopback's segment size, so a record
 * waits until the data before it is acknowledged. A client with only a request or two
 * outstanding sends nothing the acknowledgement could ride on, the kernel delays it
 * (40 ms), and the server stalls. Measured on 1 GiB from qemu-nbd: 4 connections with
 * 1 MiB in flight each took 4.6-5.3 s (40-44 ms pauses); one connection with 4-16 MiB
 * 1.5-1.8 s, as fast as nbdcopy over TLS; plain TCP is unaffected (0.66 s).
 */
const TLS_CONNECTIONS = 1;
const TLS_MAX_BYTES_IN_FLIGHT = 8 * 1024 * 1024;
/** Extra connections that cannot finish their handshake by then are given up. */
const EXTRA_CONNECTION_TIMEOUT_MS = 10_000;
/**
 * How long close() lets extra connections still in their handshake finish it, so that
 * each ends with NBD_CMD_DISC: a server logs a connection cut mid-handshake as an error
 * (qemu-nbd: "Connection reset by peer"). Handshakes take milliseconds.
 */
const CLOSE_GRACE_MS = 2_000;
/**
 * Long enough for a flush of a large write-back cache or zeroing a large range on slow
 * storage, short enough that a hung server fails a nightly backup instead of stopping it.
 */
const DEFAULT_STALL_TIMEOUT_MS = 120_000;
/** Extents taken from one block status answer; the rest is asked for again. */
const MAX_EXTENTS_PER_ANSWER = 65_536;

function endpointOf(address: ServerAddress): Endpoint {
  if ('path' in address && typeof address.path === 'string') return { path: address.path };
  if ('host' in address && typeof address.host === 'string' && Number.isInteger(address.port)) {
    return { host: address.host, port: address.port };
  }
  throw new TypeError('NBD server address needs either `path` or `host` and `port`');
}

function tlsDefaultName(endpoint: Endpoint): string {
  return endpoint.host ?? 'localhost';
}

function alignDown(value: number, alignment: number): number {
  return value - (value % alignment);
}

/** The sizing options, when given, are positive integers: refused before anything is sent. */
function checkSizing(options: ConnectOptions): void {
  for (const name of ['connections', 'requestsPerConnection', 'maxBytesInFlight', 'requestSize', 'writeRequestSize'] as const) {
    const value = options[name];
    if (value !== undefined && (!Number.isSafeInteger(value) || value < 1)) {
      throw new RangeError(`${name} must be a positive integer, not ${String(value)}`);
    }
  }
}

function stallTimeoutOf(options: CommonOptions): number {
  const timeout = options.stallTimeout ?? DEFAULT_STALL_TIMEOUT_MS;
  if (typeof timeout !== 'number' || Number.isNaN(timeout) || timeout < 0) {
    throw new TypeError(`stallTimeout must be a non-negative number of milliseconds, not ${String(timeout)}`);
  }
  return timeout === 0 ? Number.POSITIVE_INFINITY : timeout;
}

/**
 * Runs `handshake` on a fresh socket within the caller's signal and the stall timeout;
 * the socket is destroyed unless the handshake succeeds.
 */
async function handshakeOn<T>(
  endpoint: Endpoint,
  options: CommonOptions,
  signal: AbortSignal | undefined,
  slabs: SlabPool | undefined,
  handshake: (socket: Socket, bounded: AbortSignal) => Promise<T>,
): Promise<T> {
  const timeout = stallTimeoutOf(options);
  const deadline = new AbortController();
  const timer = Number.isFinite(timeout)
    ? setTimeout(() => deadline.abort(new NbdTimeoutError(`the NBD server did not finish the handshake within ${timeout} ms (stallTimeout)`)), timeout)
    : undefined;
  timer?.unref();
  const bounded = signal ? AbortSignal.any([signal, deadline.signal]) : deadline.signal;
  try {
    const socket = await openSocket(endpoint, bounded, slabs);
    const onAbort = (): void => {
      socket.destroy(abortReason(bounded));
    };
    bounded.addEventListener('abort', onAbort, { once: true });
    try {
      return await handshake(socket, bounded);
    } catch (error) {
      socket.destroy();
      // What the socket reports after an abort is a consequence; the reason is the news.
      throw bounded.aborted ? abortReason(bounded) : error;
    } finally {
      bounded.removeEventListener('abort', onAbort);
    }
  } finally {
    clearTimeout(timer);
  }
}

/** Opens an option phase, asks what `ask` asks, and leaves with NBD_OPT_ABORT: all within the bounds. */
async function askServer<T>(address: ServerAddress, ask: (phase: OptionPhase) => Promise<T>): Promise<T> {
  const endpoint = endpointOf(address);
  return handshakeOn(endpoint, address, address.signal, undefined, async (socket, bounded) => {
    const phase = await OptionPhase.open(socket, address.tls, tlsDefaultName(endpoint), { signal: bounded });
    try {
      return await ask(phase);
    } finally {
      phase.abort();
    }
  });
}

function openConnection(endpoint: Endpoint, options: ConnectOptions, signal: AbortSignal | undefined, slabs: SlabPool): Promise<Connection> {
  const slabReads = options.tls === undefined ? slabs : undefined;
  return handshakeOn(endpoint, options, signal, slabReads, async (socket, bounded) => {
    const negotiated = await negotiate(socket, {
      exportName: options.exportName ?? '',
      metaContexts: options.metaContexts ?? [BASE_ALLOCATION],
      structuredReplies: options.structuredReplies ?? true,
      tls: options.tls,
      tlsDefaultName: tlsDefaultName(endpoint),
      // A relayed connection's plain side reads into the shared slabs, as a plain one does.
      tlsContext: { slabs, signal: bounded },
    });
    const connection = new Connection(negotiated.socket, negotiated.info, negotiated.leftover, { stallTimeout: stallTimeoutOf(options) });
    // Bytes that came with the end of the handshake may already have broken it.
    const failed = connection.failed;
    if (failed) throw failed;
    return connection;
  });
}

/**
 * A client for one NBD export. Requests are split to the server's limits, pipelined,
 * and spread over several connections when the server allows it.
 */
export class NbdClient implements ChunkSource {
  /** Export size in bytes. */
  readonly size: number;
  /** Transmission flags (see `TransmissionFlags`). */
  readonly flags: number;
  readonly blockSize: BlockSizeLimits;
  readonly exportName: string;
  /** Largest READ payload this client sends. */
  readonly requestSize: number;
  /** Largest WRITE this client sends. */
  readonly writeRequestSize: number;
  readonly maxBytesInFlight: number;
  readonly structuredReplies: boolean;
  /** Meta contexts the server agreed to, in the order it answered. */
  readonly metaContexts: readonly string[];

  private readonly scheduler: RequestScheduler;
  /** Receive memory shared by all connections. */
  private readonly slabs: SlabPool;
  private readonly extraConnections = new AbortController();
  private joining: Promise<void> = Promise.resolve();
  private closed: Promise<void> | undefined;

  private constructor(first: Connection, options: ConnectOptions, slabs: SlabPool) {
    this.slabs = slabs;
    const info: ExportInfo = first.info;
    this.size = info.size;
    this.flags = info.flags;
    this.blockSize = info.blockSize;
    this.exportName = options.exportName ?? '';
    this.structuredReplies = info.structuredReplies;
    this.metaContexts = [...info.metaContexts.values()];
    const fitted = (wanted: number) => Math.max(alignDown(Math.min(wanted, info.blockSize.maximum), info.blockSize.minimum), info.blockSize.minimum);
    this.requestSize = fitted(options.requestSize ?? DEFAULT_REQUEST_SIZE);
    this.writeRequestSize = fitted(options.writeRequestSize ?? options.requestSize ?? DEFAULT_WRITE_REQUEST_SIZE);
    this.maxBytesInFlight = options.maxBytesInFlight ?? (options.tls ? TLS_MAX_BYTES_IN_FLIGHT : DEFAULT_MAX_BYTES_IN_FLIGHT);
    this.scheduler = new RequestScheduler(options.requestsPerConnection ?? DEFAULT_REQUESTS_PER_CONNECTION, this.maxBytesInFlight);
    this.scheduler.add(first);
  }

  /** Connects, negotiates and enters transmission. More connections join in the background. */
  static async connect(options: ConnectOptions): Promise<NbdClient> {
    const endpoint = endpointOf(options);
    stallTimeoutOf(options);
    checkSizing(options);
    const slabs = new SlabPool();
    const first = await openConnection(endpoint, options, options.signal, slabs);
    const client = new NbdClient(first, options, slabs);
    const wanted = client.canMultiConn ? Math.max(1, options.connections ?? (options.tls ? TLS_CONNECTIONS : DEFAULT_CONNECTIONS)) : 1;
    if (wanted > 1) client.joining = client.addConnections(endpoint, options, wanted - 1);
    return client;
  }

  /** Export names and descriptions, from NBD_OPT_LIST. */
  static listExports(address: ServerAddress): Promise<ExportListing[]> {
    return askServer(address, (phase) => phase.listExports());
  }

  /** Meta contexts the server offers for an export (all of them without `queries`). */
  static listMetaContexts(address: ServerAddress & { exportName?: string; queries?: readonly string[] }): Promise<string[]> {
    return askServer(address, async (phase) => {
      const contexts = await phase.metaContexts(Option.LIST_META_CONTEXT, address.exportName ?? '', address.queries ?? []);
      return contexts.map((context) => context.name);
    });
  }

  /** Whether the export is read-only. */
  get readOnly(): boolean {
    return (this.flags & TransmissionFlags.READ_ONLY) !== 0;
  }

  /** Whether the server allows several connections to the export (`CAN_MULTI_CONN`). */
  get canMultiConn(): boolean {
    return (this.flags & TransmissionFlags.CAN_MULTI_CONN) !== 0;
  }

  /** Connections currently open. */
  get connectionCount(): number {
    return this.scheduler.connections.length;
  }

  /** Resolves once background connections have joined (or given up). */
  async ready(): Promise<this> {
    await this.joining;
    return this;
  }

  /** Whether the server agreed to the meta context (`base:allocation`, `qemu:dirty-bitmap:...`). */
  hasMetaContext(name: string): boolean {
    return this.metaContexts.includes(name);
  }

  /**
   * Reads `length` bytes at `offset`, into `options.into` when given (see `ReadOptions`),
   * else into a new Buffer. Resolves with a Buffer over exactly the bytes read.
   */
  async read(offset: number, length: number, options: ReadOptions = {}): Promise<Buffer> {
    this.checkRange(offset, length);
    const target = options.into === undefined ? Buffer.allocUnsafe(length) : destinationOf(options, length);
    const sink = placingSink(target, offset);
    const shared = shareSignal(options.signal);
    try {
      const requests: Promise<void>[] = [];
      const piece = this.requestSize;
      for (let at = offset; at < offset + length; at += piece) {
        requests.push(this.readRequest(at, Math.min(piece, offset + length - at), sink, shared.signal));
      }
      await settleAll(requests);
    } finally {
      shared.release();
    }
    return target;
  }

  /** Reads in offset order as `ReadChunk`s; see `ReadStreamOptions` for what is read. */
  chunks(options: ReadStreamOptions = {}): AsyncGenerator<ReadChunk> {
    return readChunks(this, options);
  }

  /** `chunks()` as an object-mode Readable. */
  createReadStream(options: ReadStreamOptions = {}): Readable {
    return Readable.from(this.chunks(options), { objectMode: true });
  }

  /** One READ request (`requestSize` bytes at most); the sink sees the bytes as they arrive. */
  readRequest(offset: number, length: number, sink: ReadSink, signal?: AbortSignal): Promise<void> {
    return this.issue(Command.READ, offset, length, length, { sink, ...(signal ? { signal } : {}) });
  }

  /** Writes `data` at `offset`. The buffer must not change until the promise settles. */
  async write(offset: number, data: Uint8Array, options: WriteOptions = {}): Promise<void> {
    this.checkWritable('NBD_CMD_WRITE');
    this.checkRange(offset, data.length);
    const flags = this.fuaFlag(options);
    const shared = shareSignal(options.signal);
    try {
      const requests: Promise<void>[] = [];
      for (let at = 0; at < data.length; at += this.writeRequestSize) {
        const payload = data.subarray(at, Math.min(at + this.writeRequestSize, data.length));
        requests.push(this.issue(Command.WRITE, offset + at, payload.length, payload.length, withSignal({ flags, payload }, shared)));
      }
      await settleAll(requests);
    } finally {
      shared.release();
    }
  }

  /** Makes a range read as zeroes, punching holes unless `noHole`. */
  async writeZeroes(offset: number, length: number, options: WriteZeroesOptions = {}): Promise<void> {
    this.checkWritable('NBD_CMD_WRITE_ZEROES');
    this.checkRange(offset, length);
    if (!(this.flags & TransmissionFlags.SEND_WRITE_ZEROES)) throw new NbdError(95, 'NBD_CMD_WRITE_ZEROES', 'not supported by the server');
    if (options.fastZero && !(this.flags & TransmissionFlags.SEND_FAST_ZERO)) {
      throw new NbdError(95, 'NBD_CMD_WRITE_ZEROES', 'fast zero not supported by the server');
    }
    const flags = this.fuaFlag(options) | (options.noHole ? CommandFlags.NO_HOLE : 0) | (options.fastZero ? CommandFlags.FAST_ZERO : 0);
    await this.ranged(Command.WRITE_ZEROES, offset, length, flags, options);
  }

  /** Tells the server a range is no longer needed (it may then read as anything). */
  async trim(offset: number, length: number, options: WriteOptions = {}): Promise<void> {
    this.checkWritable('NBD_CMD_TRIM');
    this.checkRange(offset, length);
    if (!(this.flags & TransmissionFlags.SEND_TRIM)) throw new NbdError(95, 'NBD_CMD_TRIM', 'not supported by the server');
    await this.ranged(Command.TRIM, offset, length, this.fuaFlag(options), options);
  }

  /** Commits completed writes to stable storage, on every connection. */
  async flush(options: RequestSignalOption = {}): Promise<void> {
    if (!(this.flags & TransmissionFlags.SEND_FLUSH)) return;
    const connections = this.scheduler.connections;
    if (connections.length === 0) throw new NbdConnectionError('no connection left to the server');
    await settleAll(connections.map((connection) => connection.request(Command.FLUSH, 0, 0, withSignal({}, options))));
  }

  /**
   * Status of `range` (default: the whole export) in one negotiated meta context, as
   * merged runs, asking the server again until the range is covered.
   */
  async *extents(context: string, range?: ByteRange, options: RequestSignalOption = {}): AsyncGenerator<Extent> {
    if (!this.hasMetaContext(context)) {
      throw new Error(`meta context "${context}" was not negotiated (have: ${this.metaContexts.join(', ') || 'none'})`);
    }
    const { offset, length } = range ?? { offset: 0, length: this.size };
    this.checkRange(offset, length);
    const end = offset + length;
    const merger = new ExtentMerger();
    const ask = (at: number): Promise<Extent[]> => {
      const reply = this.blockStatus(context, at, Math.min(end - at, TWO_GIB), options.signal);
      // Observed when awaited; a consumer that stops early leaves it unobserved.
      reply.catch(() => {});
      return reply;
    };
    let position = offset;
    let next = position < end ? ask(position) : undefined;
    while (next) {
      const extents = await next;
      const last = extents.at(-1);
      if (!last || extents[0]!.offset !== position) {
        throw new NbdProtocolError(`NBD protocol violation: block status for "${context}" at ${position} made no progress`);
      }
      position = last.offset + last.length;
      // The next answer travels while the consumer works through this one.
      next = position < end ? ask(position) : undefined;
      for (const extent of extents) {
        const finished = merger.add(extent);
        if (finished) yield finished;
      }
    }
    const finished = merger.flush();
    if (finished) yield finished;
  }

  /** Waits for requests in flight, disconnects politely and closes every connection. */
  close(): Promise<void> {
    this.closed ??= (async () => {
      const cut = setTimeout(() => this.extraConnections.abort(new NbdConnectionError('the client was closed')), CLOSE_GRACE_MS);
      try {
        await this.joining;
      } finally {
        clearTimeout(cut);
      }
      const connections = this.scheduler.connections;
      this.scheduler.shutdown(new NbdConnectionError('the client is closed'));
      await Promise.all(connections.map((connection) => connection.close()));
    })();
    return this.closed;
  }

  private async blockStatus(context: string, offset: number, length: number, signal?: AbortSignal): Promise<Extent[]> {
    const connection = await this.scheduler.acquire(0, signal);
    let extents: Extent[] | undefined;
    try {
      await connection.request(Command.BLOCK_STATUS, offset, length, {
        ...(signal ? { signal } : {}),
        blockStatus: (contextId, descriptors) => {
          if (connection.info.metaContexts.get(contextId) === context) {
            extents = decodeDescriptors(descriptors, offset, offset + length, MAX_EXTENTS_PER_ANSWER);
          }
        },
      });
    } finally {
      this.scheduler.release(connection, 0);
    }
    if (!extents) throw new NbdProtocolError(`NBD protocol violation: block status reply lacks context "${context}"`);
    return extents;
  }

  private async issue(
    command: (typeof Command)[keyof typeof Command],
    offset: number,
    length: number,
    bytes: number,
    options: Parameters<Connection['request']>[3],
  ): Promise<void> {
    const connection = await this.scheduler.acquire(bytes, options?.signal);
    try {
      await connection.request(command, offset, length, options);
    } finally {
      this.scheduler.release(connection, bytes);
    }
  }

  private async ranged(
    command: (typeof Command)[keyof typeof Command],
    offset: number,
    length: number,
    flags: number,
    options: RequestSignalOption,
  ): Promise<void> {
    // Not a payload, so only the 32-bit length field limits it.
    const step = alignDown(TWO_GIB / 2, this.blockSize.minimum);
    const shared = shareSignal(options.signal);
    try {
      const requests: Promise<void>[] = [];
      for (let at = offset; at < offset + length; at += step) {
        requests.push(this.issue(command, at, Math.min(step, offset + length - at), 0, withSignal({ flags }, shared)));
      }
      await settleAll(requests);
    } finally {
      shared.release();
    }
  }

  private fuaFlag(options: WriteOptions): number {
    return options.fua && this.flags & TransmissionFlags.SEND_FUA ? CommandFlags.FUA : 0;
  }

  private checkWritable(command: string): void {
    if (this.readOnly) throw new NbdError(1, command, 'the export is read-only');
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isInteger(offset) || offset < 0) throw new RangeError(`offset must be a non-negative integer, not ${String(offset)}`);
    if (!Number.isInteger(length) || length < 0) throw new RangeError(`length must be a non-negative integer, not ${String(length)}`);
    // Past 2^53 an integer is past the end of any export too.
    if (offset + length > this.size) {
      throw new RangeError(`range ${offset}+${length} lies outside the export (${this.size} bytes): it ends ${offset + length - this.size} bytes past the end`);
    }
  }

  private async addConnections(endpoint: Endpoint, options: ConnectOptions, count: number): Promise<void> {
    const signal = AbortSignal.any([this.extraConnections.signal, AbortSignal.timeout(EXTRA_CONNECTION_TIMEOUT_MS)]);
    const opened = await Promise.allSettled(Array.from({ length: count }, () => openConnection(endpoint, options, signal, this.slabs)));
    for (const result of opened) {
      if (result.status !== 'fulfilled') continue;
      const connection = result.value;
      // A connection to a different export would corrupt reads, one that negotiated
      // otherwise would answer differently: ended politely, and not used.
      if (!this.agreesWith(connection.info)) {
        connection.close().catch(() => undefined);
        continue;
      }
      this.scheduler.add(connection);
    }
  }

  private agreesWith(info: ExportInfo): boolean {
    const contexts = [...info.metaContexts.values()];
    return (
      info.size === this.size &&
      info.structuredReplies === this.structuredReplies &&
      contexts.length === this.metaContexts.length &&
      contexts.every((name) => this.metaContexts.includes(name))
    );
  }

  toString(): string {
    return `NbdClient(${this.exportName || '(default export)'})`;
  }
}

/** The part of `options.into` a read of `length` bytes fills, checked. */
function destinationOf(options: ReadOptions, length: number): Buffer {
  const into: unknown = options.into;
  if (!ArrayBuffer.isView(into)) throw new TypeError(`into must be a Buffer, Uint8Array or other ArrayBufferView, not ${describe(into)}`);
  const at = options.intoOffset ?? 0;
  if (!Number.isSafeInteger(at) || at < 0) throw new RangeError(`intoOffset must be a non-negative integer, not ${String(at)}`);
  if (at + length > into.byteLength) {
    throw new RangeError(`into holds ${into.byteLength} bytes: ${length} bytes from intoOffset ${at} need ${at + length}`);
  }
  return Buffer.from(into.buffer, into.byteOffset + at, length);
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'object') return value.constructor?.name ?? 'an object';
  return typeof value;
}

/** A sink that reads into `target`, which holds the bytes from `offset` on. */
function placingSink(target: Buffer, offset: number): PlacingReadSink {
  return {
    holds: 'call',
    data(at, bytes) {
      const place = at - offset;
      // Read there directly by the socket: nothing to copy.
      if (bytes.buffer === target.buffer && bytes.byteOffset === target.byteOffset + place) return;
      bytes.copy(target, place);
    },
    hole(at, size) {
      target.fill(0, at - offset, at - offset + size);
    },
    [PLACE](at, size) {
      return target.subarray(at - offset, at - offset + size);
    },
  };
}

function withSignal<T extends object>(options: T, from: { signal?: AbortSignal | undefined }): T & { signal?: AbortSignal } {
  return from.signal ? { ...options, signal: from.signal } : options;
}

/** Like Promise.all, but waits for every request so none is left running unobserved. */
async function settleAll(requests: Promise<void>[]): Promise<void> {
  if (requests.length === 1) return requests[0];
  const results = await Promise.allSettled(requests);
  const failed = results.find((result): result is PromiseRejectedResult => result.status === 'rejected');
  if (failed) throw failed.reason;
}
