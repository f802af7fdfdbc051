import { connect as netConnect, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { ByteQueue } from './byte-queue.js';
import { abortReason, NbdConnectionError } from './errors.js';
import { slabReader, type SlabPool, type SlabReader } from './slabs.js';

/** Where the server listens: a unix socket `path`, or TCP `host` + `port`. */
export type Endpoint = { path: string; host?: undefined; port?: undefined } | { host: string; port: number; path?: undefined };

const readers = new WeakMap<Duplex, SlabReader>();

/** The slab reader behind a socket opened with `slabReads`, if any. */
export function slabReaderOf(socket: Duplex): SlabReader | undefined {
  return readers.get(socket);
}

/**
 * With `slabs`, reads land in that pool's memory (see `slabReader`) instead of Node's
 * per-read allocation; received bytes still arrive as 'data' events. Sockets that TLS
 * will take over must go without.
 */
export function openSocket(endpoint: Endpoint, signal?: AbortSignal, slabs?: SlabPool): Promise<Socket> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortReason(signal));
      return;
    }
    const opened = readingInto(slabs, (onread) =>
      endpoint.path !== undefined
        ? netConnect({ path: endpoint.path, ...onread })
        : netConnect({ host: endpoint.host, port: endpoint.port, noDelay: true, ...onread }),
    );
    const onAbort = (): void => {
      opened.destroy();
      settle(abortReason(signal!));
    };
    const settle = (error?: Error): void => {
      signal?.removeEventListener('abort', onAbort);
      opened.off('error', settle);
      opened.off('connect', onConnect);
      if (error) reject(error);
      else resolve(opened);
    };
    const onConnect = (): void => {
      // Request headers are tiny: Nagle would hold them back while replies are awaited.
      if (endpoint.path === undefined) opened.setNoDelay(true);
      settle();
    };
    opened.once('connect', onConnect);
    opened.once('error', settle);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** A socket over a descriptor already connected (a TLS relay's plain side), reading into `slabs` if given. */
export function socketOnDescriptor(fd: number, slabs?: SlabPool): Socket {
  return readingInto(slabs, (onread) => new Socket({ fd, readable: true, writable: true, ...onread }));
}

type OnRead = { onread?: { buffer: () => Uint8Array; callback: (nread: number, buf: Uint8Array) => boolean } };

/** The socket `make` creates, with its reads landing in `slabs` (see `slabReader`) when given. */
function readingInto(slabs: SlabPool | undefined, make: (onread: OnRead) => Socket): Socket {
  if (!slabs) return make({});
  // Declared before the reader, whose callback needs it; assigned once, just below.
  // eslint-disable-next-line prefer-const
  let socket: Socket | undefined;
  const reader = slabReader(slabs, (chunk) => socket!.emit('data', chunk));
  socket = make({ onread: { buffer: reader.buffer, callback: reader.callback } });
  readers.set(socket, reader);
  return socket;
}

/**
 * Reads exact byte counts from a socket during the handshake, where the exchange is
 * strictly request/answer and speed does not matter.
 */
export class HandshakeReader {
  private readonly queue = new ByteQueue();
  private waiter: { size: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;

  constructor(private readonly socket: Duplex) {
    socket.on('data', this.onData);
    socket.on('error', this.onError);
    socket.on('end', this.onEnd);
    socket.on('close', this.onEnd);
  }

  read(size: number): Promise<Buffer> {
    if (this.queue.length >= size) return Promise.resolve(this.queue.read(size));
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiter = { size, resolve, reject };
    });
  }

  /** Stops listening and gives back anything received but not read. */
  detach(): Buffer[] {
    this.socket.off('data', this.onData);
    this.socket.off('error', this.onError);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onEnd);
    this.socket.pause();
    return this.queue.drain();
  }

  private readonly onData = (chunk: Buffer): void => {
    this.queue.push(chunk);
    const waiter = this.waiter;
    if (waiter && this.queue.length >= waiter.size) {
      this.waiter = undefined;
      waiter.resolve(this.queue.read(waiter.size));
    }
  };

  private readonly onError = (error: Error): void => {
    this.fail(error);
  };

  private readonly onEnd = (): void => {
    this.fail(new NbdConnectionError('the server closed the connection during the handshake'));
  };

  private fail(error: Error): void {
    this.failure ??= error;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(this.failure);
  }
}
