import type { Duplex } from 'node:stream';
import { ByteQueue } from './byte-queue.js';
import { keepReceived, lendReceived, type ReadPlacement } from './slabs.js';
import { slabReaderOf } from './transport.js';
import { abortReason, NbdConnectionError, NbdError, NbdProtocolError, NbdTimeoutError } from './errors.js';
import type { ExportInfo } from './handshake.js';
import { ReadCoverage } from './read-coverage.js';
import {
  Command,
  type CommandCode,
  MAX_ERROR_CHUNK,
  MAX_REPLY_CHUNK,
  nameOf,
  REQUEST_HEADER_SIZE,
  REQUEST_MAGIC,
  ReplyFlags,
  ReplyType,
  SIMPLE_REPLY_HEADER_SIZE,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_HEADER_SIZE,
  STRUCTURED_REPLY_MAGIC,
} from './protocol.js';

/** Receives a READ's bytes as they come off the socket, possibly out of order. */
export interface ReadSink {
  /** `bytes` is a view of received memory that nothing else will write to: it may be kept. */
  data(offset: number, bytes: Buffer): void;
  /** A range the server reported as reading as zeroes. */
  hole(offset: number, length: number): void;
  /**
   * How long `bytes` are held once `data()` returns: 'keep' (the default) as long as the
   * sink likes; 'call' not at all (the sink copies them); 'lend' until the sink hands
   * them to `returnReceived()`. Receive memory is reused only after 'call' and 'lend'.
   */
  readonly holds?: 'keep' | 'call' | 'lend';
}

/** Names the method of a `PlacingReadSink`. */
export const PLACE = Symbol('nbd read placement');

/**
 * A sink with memory of its own for the whole READ: the socket may read a payload
 * straight into it, and `data()` then receives that very memory (nothing to copy).
 */
export interface PlacingReadSink extends ReadSink {
  /** Where the bytes of `offset`..`offset + length` belong. */
  [PLACE](offset: number, length: number): Uint8Array;
}

function placesReads(sink: ReadSink | undefined): sink is PlacingReadSink {
  return sink !== undefined && PLACE in sink;
}

/**
 * Called once per BLOCK_STATUS chunk with the raw (length, flags) descriptor pairs, for a
 * context id the handshake agreed on; every descriptor's length is non-zero.
 */
export type BlockStatusSink = (contextId: number, descriptors: Buffer) => void;

export interface RequestOptions {
  flags?: number;
  payload?: Uint8Array;
  sink?: ReadSink;
  blockStatus?: BlockStatusSink;
  signal?: AbortSignal;
}

export interface ConnectionOptions {
  /**
   * Milliseconds the server may send nothing while requests wait for it before the
   * connection is failed with NbdTimeoutError; 0 or Infinity waits forever.
   */
  stallTimeout?: number;
}

interface PendingRequest {
  cookie: number;
  command: CommandCode;
  offset: number;
  length: number;
  sink: ReadSink | undefined;
  blockStatus: BlockStatusSink | undefined;
  /** The server's error reply, or what a sink threw. */
  error: Error | undefined;
  /** READ bytes described by data and hole replies, to catch gaps and overlaps. */
  coverage: ReadCoverage | undefined;
  /** Meta context ids a BLOCK_STATUS reply has answered for: each may answer once. */
  answeredContexts: Set<number> | undefined;
  /** A structured chunk has come for it: the reply may not switch to a simple one. */
  structured: boolean;
  /** Settled early (aborted): the reply is still parsed, then dropped. */
  abandoned: boolean;
  /** Its sink places its payload in memory of its own (see `PlacingReadSink`). */
  placing: boolean;
  /**
   * Aborted while the socket's next read was to land in its sink's memory: the caller
   * hears of the abort once that read is done, so nothing writes there afterwards.
   */
  lateRejection: Error | undefined;
  resolve(): void;
  reject(error: Error): void;
  detachSignal: (() => void) | undefined;
}

type ParseState =
  | { kind: 'header' }
  | { kind: 'payload'; request: PendingRequest; offset: number; remaining: number; done: boolean }
  | { kind: 'data-offset'; request: PendingRequest; dataLength: number; done: boolean }
  | { kind: 'chunk'; request: PendingRequest; type: number; length: number; done: boolean };

const HEADER: ParseState = { kind: 'header' };
const commandName = (command: number): string => nameOf(Command, command, 'NBD_CMD_');
const TWO_32 = 2 ** 32;
const HEADER_BATCH_SIZE = REQUEST_HEADER_SIZE * 256;
/** Payload left below this goes through receive memory with what follows it, in one read. */
const MIN_PLACED_READ = 16 * 1024;

/**
 * One socket in the transmission phase: sends requests tagged with cookies and matches
 * replies to them as they arrive, in whatever order the server finishes them.
 */
export class Connection {
  readonly info: ExportInfo;
  private readonly socket: Duplex;
  private readonly pending = new Map<number, PendingRequest>();
  private readonly queue = new ByteQueue();
  private state: ParseState = HEADER;
  private nextCookie = 1;
  private failure: Error | undefined;
  /** Request headers not yet written; the part before `batchUsed` is filled. */
  private batch = Buffer.allocUnsafe(HEADER_BATCH_SIZE);
  private batchUsed = 0;
  private flushScheduled = false;
  private closing: Promise<void> | undefined;
  /** Woken when no request is left that a caller still waits for. */
  private idleWaiters: Array<() => void> = [];
  private readonly failureListeners: Array<(error: Error) => void> = [];
  private readonly stallTimeout: number;
  private stallTimer: NodeJS.Timeout | undefined;
  /** When the server last sent anything, or requests started waiting (performance.now()). */
  private lastHeard = 0;
  /** Pending READs whose payload may go straight to their sink's memory. */
  private placingRequests = 0;
  /** The request whose sink's memory the socket's next read lands in. */
  private receivingInto: PendingRequest | undefined;
  private readonly replyHeaderSize: number;

  constructor(socket: Duplex, info: ExportInfo, leftover: Buffer[] = [], options: ConnectionOptions = {}) {
    this.socket = socket;
    this.info = info;
    const stallTimeout = options.stallTimeout ?? 0;
    this.stallTimeout = stallTimeout > 0 && Number.isFinite(stallTimeout) ? stallTimeout : 0;
    for (const chunk of leftover) this.queue.push(chunk);
    this.replyHeaderSize = info.structuredReplies ? STRUCTURED_REPLY_HEADER_SIZE + 8 : SIMPLE_REPLY_HEADER_SIZE;
    const reader = slabReaderOf(socket);
    // Past the handshake, every holder of received bytes says how long it holds them.
    reader?.startRecycling();
    reader?.placeReadsWith(this.placeNextRead);
    socket.on('data', this.onData);
    socket.on('error', this.onError);
    socket.on('end', this.onClose);
    socket.on('close', this.onClose);
    socket.resume();
    if (this.queue.length > 0) this.parse();
  }

  /** Called once when the connection fails; at once if it already has. */
  onFailure(listener: (error: Error) => void): void {
    if (this.failure) listener(this.failure);
    else this.failureListeners.push(listener);
  }

  /** Why the connection is unusable, once it is. */
  get failed(): Error | undefined {
    return this.failure;
  }

  request(command: CommandCode, offset: number, length: number, options: RequestOptions = {}): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closing) return Promise.reject(new NbdConnectionError('the connection is closing'));
    const signal = options.signal;
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    return new Promise<void>((resolve, reject) => {
      const cookie = this.allocateCookie();
      const placing = placesReads(options.sink) && length >= MIN_PLACED_READ;
      if (placing) this.placingRequests++;
      const request: PendingRequest = {
        cookie,
        command,
        offset,
        length,
        sink: options.sink,
        blockStatus: options.blockStatus,
        error: undefined,
        coverage: command === Command.READ ? new ReadCoverage() : undefined,
        answeredContexts: undefined,
        structured: false,
        abandoned: false,
        placing,
        lateRejection: undefined,
        resolve,
        reject,
        detachSignal: undefined,
      };
      if (signal) {
        const onAbort = (): void => {
          if (request.abandoned) return;
          request.abandoned = true;
          request.sink = undefined;
          request.blockStatus = undefined;
          if (this.receivingInto === request) request.lateRejection = abortReason(signal);
          else reject(abortReason(signal));
          // close() waits only for requests someone still waits for.
          this.wakeIdleWaiters();
        };
        signal.addEventListener('abort', onAbort, { once: true });
        request.detachSignal = () => signal.removeEventListener('abort', onAbort);
      }
      if (this.pending.size === 0) this.startStallClock();
      this.pending.set(cookie, request);
      this.send(command, options.flags ?? 0, cookie, offset, length, options.payload);
    });
  }

  /** Waits for outstanding requests, says NBD_CMD_DISC and closes the socket. */
  close(): Promise<void> {
    this.closing ??= this.closeGracefully();
    return this.closing;
  }

  /** Drops the connection at once; pending requests reject with `error`. */
  destroy(error: Error = new NbdConnectionError('the connection was closed')): void {
    this.fail(error);
  }

  private async closeGracefully(): Promise<void> {
    // Requests whose callers gave up (aborted) are not waited for: the server may never
    // answer them. It must still finish them before it honours NBD_CMD_DISC.
    if (this.hasAwaitedRequests()) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    if (this.failure) return;
    // NBD_CMD_DISC has no reply and nothing may follow it, so the socket is done
    // once the request is out: waiting for the server to hang up as well would
    // only add a round trip per connection.
    this.send(Command.DISC, 0, 0, 0, 0, undefined);
    // Out now: a header batch waiting for the next tick would meet an ended socket.
    this.flushHeaders();
    if (this.socket.writableLength > 0) {
      // Still queued in Node (a slow peer, or TLS): wait until it reaches the kernel.
      const flushed = new Promise<void>((resolve) => {
        this.socket.once('close', () => resolve());
        this.socket.end(() => this.socket.destroy());
      });
      const timer = setTimeout(() => this.socket.destroy(), 5000);
      timer.unref();
      await flushed;
      clearTimeout(timer);
    }
    // The request sits in the kernel's send buffer, which survives the close.
    this.fail(new NbdConnectionError('the connection was closed'));
  }

  private allocateCookie(): number {
    let cookie = this.nextCookie;
    while (this.pending.has(cookie)) cookie = (cookie + 1) % TWO_32 || 1;
    this.nextCookie = (cookie + 1) % TWO_32 || 1;
    return cookie;
  }

  private send(command: number, flags: number, cookie: number, offset: number, length: number, payload: Uint8Array | undefined): void {
    if (this.batchUsed + REQUEST_HEADER_SIZE > this.batch.length) this.flushHeaders();
    const header = this.batch;
    const at = this.batchUsed;
    header.writeUInt32BE(REQUEST_MAGIC, at);
    header.writeUInt16BE(flags, at + 4);
    header.writeUInt16BE(command, at + 6);
    header.writeUInt32BE(0, at + 8);
    header.writeUInt32BE(cookie, at + 12);
    header.writeUInt32BE(Math.floor(offset / TWO_32), at + 16);
    header.writeUInt32BE(offset >>> 0, at + 20);
    header.writeUInt32BE(length, at + 24);
    this.batchUsed += REQUEST_HEADER_SIZE;
    if (payload) {
      // Header and payload leave in one writev, not two writes.
      this.socket.cork();
      this.flushHeaders();
      this.socket.write(payload);
      this.socket.uncork();
    } else if (!this.flushScheduled) {
      // Headers issued in the same tick leave in one write.
      this.flushScheduled = true;
      process.nextTick(this.flushHeaders);
    }
  }

  private readonly flushHeaders = (): void => {
    this.flushScheduled = false;
    if (this.batchUsed === 0) return;
    const headers = this.batch.subarray(0, this.batchUsed);
    this.batch = this.batch.subarray(this.batchUsed);
    if (this.batch.length < REQUEST_HEADER_SIZE) this.batch = Buffer.allocUnsafe(HEADER_BATCH_SIZE);
    this.batchUsed = 0;
    if (!this.socket.destroyed) this.socket.write(headers);
  };

  /** Where the socket's next read should land (see `ReadPlacement`). */
  private readonly placeNextRead = (): ReadPlacement => {
    const state = this.state;
    // Node asks where the next read lands as soon as the last one is handled. With no
    // request pending at all, the next reply answers one not sent yet, which may well
    // place its payload: it is read up to its header below, like any other, or a slab
    // read would take the payload in and copy it later (a fifth of what 16 reads of
    // 2 MiB in flight received went that way).
    if (this.failure || (this.placingRequests === 0 && this.pending.size > 0)) return undefined;
    if (state.kind === 'payload') {
      const sink = state.request.sink;
      if (state.remaining >= MIN_PLACED_READ && placesReads(sink)) {
        this.receivingInto = state.request;
        return sink[PLACE](state.offset, state.remaining);
      }
      return state.remaining + this.replyHeaderSize;
    }
    // No further than where the next payload starts, so that it can go to its place.
    const wanted = state.kind === 'header' ? this.replyHeaderSize : state.kind === 'data-offset' ? 8 : state.length;
    return Math.max(1, wanted - this.queue.length);
  };

  private readonly onData = (chunk: Buffer): void => {
    const landed = this.receivingInto;
    if (landed) {
      this.receivingInto = undefined;
      if (landed.lateRejection) {
        landed.reject(landed.lateRejection);
        this.wakeIdleWaiters();
      }
    }
    if (this.failure) return;
    if (this.stallTimer) this.lastHeard = performance.now();
    this.queue.push(chunk);
    this.parse();
  };

  private startStallClock(): void {
    if (this.stallTimeout === 0) return;
    this.lastHeard = performance.now();
    if (!this.stallTimer) this.armStallTimer(this.stallTimeout);
  }

  private armStallTimer(delay: number): void {
    this.stallTimer = setTimeout(this.checkStall, delay);
    // The socket keeps the process alive while requests wait; the timer need not.
    this.stallTimer.unref();
  }

  private readonly checkStall = (): void => {
    this.stallTimer = undefined;
    if (this.failure || this.pending.size === 0) return;
    const silent = performance.now() - this.lastHeard;
    if (silent < this.stallTimeout) {
      this.armStallTimer(this.stallTimeout - silent);
      return;
    }
    const waiting = this.pending.size;
    this.fail(
      new NbdTimeoutError(`the server sent nothing for ${Math.round(silent)} ms while ${waiting} request${waiting === 1 ? '' : 's'} waited (stallTimeout)`),
    );
  };

  private readonly onError = (error: Error): void => {
    this.fail(new NbdConnectionError(`connection lost: ${error.message}`, { cause: error }));
  };

  private readonly onClose = (): void => {
    this.fail(new NbdConnectionError('the server closed the connection'));
  };

  private parse(): void {
    const queue = this.queue;
    while (this.failure === undefined) {
      const state = this.state;
      switch (state.kind) {
        case 'header': {
          if (queue.length < SIMPLE_REPLY_HEADER_SIZE) return;
          const magic = queue.peekUInt32BE();
          if (magic === SIMPLE_REPLY_MAGIC) {
            this.onSimpleReply(queue.read(SIMPLE_REPLY_HEADER_SIZE));
          } else if (magic === STRUCTURED_REPLY_MAGIC) {
            if (queue.length < STRUCTURED_REPLY_HEADER_SIZE) return;
            this.onStructuredReply(queue.read(STRUCTURED_REPLY_HEADER_SIZE));
          } else {
            this.violation(`bad reply magic 0x${magic.toString(16).padStart(8, '0')}`);
          }
          break;
        }
        case 'payload': {
          if (queue.length === 0) return;
          const bytes = queue.view(state.remaining);
          const sink = state.request.sink;
          if (sink) {
            if (sink.holds === 'lend') lendReceived(bytes);
            else if (sink.holds !== 'call') keepReceived(bytes);
            try {
              sink.data(state.offset, bytes);
            } catch (error) {
              this.sinkFailed(state.request, error);
            }
          }
          state.offset += bytes.length;
          state.remaining -= bytes.length;
          if (state.remaining === 0) this.endChunk(state.request, state.done);
          break;
        }
        case 'data-offset': {
          if (queue.length < 8) return;
          const { request, dataLength } = state;
          const offset = readOffset(queue.read(8), 0);
          if (offset < request.offset || offset + dataLength > request.offset + request.length) {
            this.violation(`NBD_REPLY_TYPE_OFFSET_DATA at ${offset}+${dataLength} lies outside the request ${request.offset}+${request.length}`);
            break;
          }
          if (!this.cover(request, offset, dataLength, 'NBD_REPLY_TYPE_OFFSET_DATA')) break;
          this.state = { kind: 'payload', request, offset, remaining: dataLength, done: state.done };
          break;
        }
        case 'chunk': {
          if (queue.length < state.length) return;
          const body = queue.read(state.length);
          this.onChunkBody(state.request, state.type, body);
          if (this.failure === undefined) this.endChunk(state.request, state.done);
          break;
        }
      }
    }
  }

  private lookup(header: Buffer): PendingRequest | undefined {
    const high = header.readUInt32BE(8);
    const low = header.readUInt32BE(12);
    const request = high === 0 ? this.pending.get(low) : undefined;
    if (!request) this.violation(`reply for unknown cookie 0x${header.toString('hex', 8, 16)}`);
    return request;
  }

  private onSimpleReply(header: Buffer): void {
    const errno = header.readUInt32BE(4);
    const request = this.lookup(header);
    if (!request) return;
    if (request.structured) return this.violation(`a simple reply to ${commandName(request.command)} after structured reply chunks`);
    if (errno !== 0) {
      request.error = new NbdError(errno, commandName(request.command));
      this.complete(request);
    } else if (request.command === Command.READ && request.length > 0) {
      if (!this.cover(request, request.offset, request.length, 'simple reply')) return;
      this.state = { kind: 'payload', request, offset: request.offset, remaining: request.length, done: true };
    } else {
      this.complete(request);
    }
  }

  private onStructuredReply(header: Buffer): void {
    const flags = header.readUInt16BE(4);
    const type = header.readUInt16BE(6);
    const length = header.readUInt32BE(16);
    const request = this.lookup(header);
    if (!request) return;
    request.structured = true;
    const done = (flags & ReplyFlags.DONE) !== 0;
    if (!this.info.structuredReplies) return this.violation(`structured reply received but never negotiated`);
    const what = (): string => `${nameOf(ReplyType, type, 'NBD_REPLY_TYPE_')} reply to ${commandName(request.command)}`;
    if (length > MAX_REPLY_CHUNK) return this.violation(`${what()} of ${length} bytes exceeds the protocol bound`);
    switch (type) {
      case ReplyType.NONE:
        if (length !== 0 || !done) return this.violation(`malformed ${what()}`);
        return this.complete(request);
      case ReplyType.OFFSET_DATA:
        if (request.command !== Command.READ) return this.violation(`unexpected ${what()}`);
        // At least one byte of data: an empty chunk describes nothing.
        if (length < 9) return this.violation(`${what()} too short`);
        if (length - 8 > request.length) {
          return this.violation(`${what()} carries ${length - 8} bytes but ${request.length} were requested`);
        }
        this.state = { kind: 'data-offset', request, dataLength: length - 8, done };
        return;
      case ReplyType.OFFSET_HOLE:
        if (request.command !== Command.READ) return this.violation(`unexpected ${what()}`);
        if (length !== 12) return this.violation(`${what()} has length ${length}, not 12`);
        break;
      case ReplyType.BLOCK_STATUS:
        if (request.command !== Command.BLOCK_STATUS) return this.violation(`unexpected ${what()}`);
        if (length < 12 || (length - 4) % 8 !== 0) return this.violation(`malformed ${what()} of ${length} bytes`);
        break;
      case ReplyType.ERROR:
        if (length < 6) return this.violation(`${what()} too short`);
        if (length > MAX_ERROR_CHUNK) return this.violation(`${what()} of ${length} bytes is longer than any error message`);
        break;
      case ReplyType.ERROR_OFFSET:
        if (length < 14) return this.violation(`${what()} too short`);
        if (length > MAX_ERROR_CHUNK) return this.violation(`${what()} of ${length} bytes is longer than any error message`);
        break;
      default:
        return this.violation(`unknown reply type ${type} to ${commandName(request.command)}`);
    }
    this.state = { kind: 'chunk', request, type, length, done };
  }

  private onChunkBody(request: PendingRequest, type: number, body: Buffer): void {
    switch (type) {
      case ReplyType.OFFSET_HOLE: {
        const offset = readOffset(body, 0);
        const size = body.readUInt32BE(8);
        if (size === 0) return this.violation('NBD_REPLY_TYPE_OFFSET_HOLE of zero bytes');
        if (offset < request.offset || offset + size > request.offset + request.length) {
          return this.violation(`NBD_REPLY_TYPE_OFFSET_HOLE at ${offset}+${size} lies outside the request ${request.offset}+${request.length}`);
        }
        if (!this.cover(request, offset, size, 'NBD_REPLY_TYPE_OFFSET_HOLE')) return;
        const sink = request.sink;
        try {
          sink?.hole(offset, size);
        } catch (error) {
          this.sinkFailed(request, error);
        }
        return;
      }
      case ReplyType.BLOCK_STATUS: {
        const contextId = body.readUInt32BE(0);
        if (!this.info.metaContexts.has(contextId)) {
          return this.violation(`block status for meta context id ${contextId}, which the handshake never agreed on`);
        }
        const answered = (request.answeredContexts ??= new Set());
        if (answered.has(contextId)) return this.violation(`a second block status reply for meta context id ${contextId}`);
        answered.add(contextId);
        for (let at = 4; at < body.length; at += 8) {
          if (body.readUInt32BE(at) === 0) return this.violation('a block status descriptor of length zero');
        }
        try {
          request.blockStatus?.(contextId, body.subarray(4));
        } catch (error) {
          this.sinkFailed(request, error);
        }
        return;
      }
      case ReplyType.ERROR:
      case ReplyType.ERROR_OFFSET: {
        const errno = body.readUInt32BE(0);
        const messageLength = body.readUInt16BE(4);
        const extra = type === ReplyType.ERROR_OFFSET ? 8 : 0;
        if (6 + messageLength + extra > body.length) return this.violation('error message overruns its reply chunk');
        const message = body.toString('utf8', 6, 6 + messageLength);
        const offset = extra ? readOffset(body, 6 + messageLength) : undefined;
        if (errno === 0) return this.violation('error reply chunk with errno 0');
        if (offset !== undefined && (offset < request.offset || offset >= request.offset + request.length)) {
          return this.violation(`error at offset ${offset}, outside the request ${request.offset}+${request.length}`);
        }
        request.error ??= new NbdError(errno, commandName(request.command), message, offset);
        return;
      }
    }
  }

  /** Records content for a READ; false (and the connection failed) when the server repeats itself. */
  private cover(request: PendingRequest, offset: number, length: number, what: string): boolean {
    const problem = request.coverage?.add(offset, length);
    if (problem === 'overlap') {
      this.violation(`${what} at ${offset}+${length} overlaps content already sent for the READ at ${request.offset}+${request.length}`);
      return false;
    }
    if (problem === 'scattered') {
      this.violation(`the READ at ${request.offset}+${request.length} was answered in too many separate pieces`);
      return false;
    }
    return true;
  }

  /** A sink that throws fails its own request, not the connection: replies still parse. */
  private sinkFailed(request: PendingRequest, error: unknown): void {
    request.error ??= error instanceof Error ? error : new Error(String(error));
    request.sink = undefined;
    request.blockStatus = undefined;
  }

  private endChunk(request: PendingRequest, done: boolean): void {
    this.state = HEADER;
    if (done) this.complete(request);
  }

  private complete(request: PendingRequest): void {
    this.state = HEADER;
    const covered = request.coverage?.covered ?? 0;
    if (request.command === Command.READ && !request.error && covered !== request.length) {
      return this.violation(`READ of ${request.length} bytes at ${request.offset} answered with ${covered} bytes`);
    }
    this.pending.delete(request.cookie);
    if (request.placing) this.placingRequests--;
    request.detachSignal?.();
    if (!request.abandoned) {
      if (request.error) request.reject(request.error);
      else request.resolve();
    }
    this.wakeIdleWaiters();
  }

  private hasAwaitedRequests(): boolean {
    for (const request of this.pending.values()) if (!request.abandoned) return true;
    return false;
  }

  private wakeIdleWaiters(): void {
    if (this.idleWaiters.length === 0 || this.hasAwaitedRequests()) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const wake of waiters) wake();
  }

  private violation(message: string): void {
    this.fail(new NbdProtocolError(`NBD protocol violation: ${message}`));
  }

  private fail(error: Error): void {
    if (this.failure) return;
    this.failure = error;
    clearTimeout(this.stallTimer);
    this.stallTimer = undefined;
    this.state = HEADER;
    this.queue.drain();
    this.socket.off('data', this.onData);
    // Errors after the first are consequences of it.
    this.socket.on('error', () => {});
    this.socket.destroy();
    const requests = [...this.pending.values()];
    this.pending.clear();
    this.placingRequests = 0;
    // The socket is destroyed: no read lands anywhere any more.
    this.receivingInto = undefined;
    for (const request of requests) {
      request.detachSignal?.();
      if (!request.abandoned) request.reject(error);
      else if (request.lateRejection) request.reject(request.lateRejection);
    }
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const wake of waiters) wake();
    for (const listener of this.failureListeners) listener(error);
  }
}

function readOffset(buf: Buffer, at: number): number {
  return buf.readUInt32BE(at) * TWO_32 + buf.readUInt32BE(at + 4);
}
