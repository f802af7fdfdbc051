import type { Connection } from './connection.js';
import type { NativeStream } from './native.js';

/** What `Stream.recv()` got: `bytes` at the start of the buffer, then a hole of `hole` bytes, or the end. */
export interface StreamReceived {
  bytes: number;
  /** Length of the hole that follows the bytes (sparse streams, `StreamRecvFlags.STOP_AT_HOLE`); 0 if none. */
  hole: number;
  /** The sender finished: call `finish()`. */
  end: boolean;
}

/**
 * A libvirt stream (`virStreamNew`), the data channel of `StorageVolume` uploads and
 * downloads; `StorageVolume.upload()` and `download()` drive one for you. Every call
 * runs on a worker thread, so the event loop never waits for the network or the
 * daemon; calls on one stream run one after another, in the order they were made.
 * A stream dropped (or whose connection is closed) in the middle of a transfer is
 * aborted, so libvirt's side is cleaned up.
 */
export class Stream {
  readonly connection: Connection;
  readonly #native: NativeStream;
  #last: Promise<unknown> = Promise.resolve();

  /** @internal Streams come from `Connection.newStream()`. */
  constructor(connection: Connection, native: NativeStream) {
    this.connection = connection;
    this.#native = native;
  }

  /** @internal The native handle, for `StorageVolume`. */
  get native(): NativeStream {
    return this.#native;
  }

  /** Sends all of `data` (not copied: leave it unchanged until the promise settles); resolves with the byte count. */
  send(data: Uint8Array | readonly Uint8Array[]): Promise<number> {
    const buffers = data instanceof Uint8Array ? [data] : [...data];
    return this.#queue(() => this.#native.send(buffers));
  }

  /** Tells the receiver to skip `length` bytes (a sparse upload: they stay a hole). */
  sendHole(length: number, flags = 0): Promise<void> {
    return this.#queue(() => this.#native.sendHole(length, flags));
  }

  /** Fills `buffer` (see `StreamReceived`); `StreamRecvFlags.STOP_AT_HOLE` reports holes instead of zeroes. */
  recv(buffer: Uint8Array, flags = 0): Promise<StreamReceived> {
    return this.#queue(() => this.#native.recv(buffer, flags));
  }

  /** Ends a transfer that went through: the daemon confirms it has every byte. */
  finish(): Promise<void> {
    return this.#queue(() => this.#native.finish());
  }

  /** Ends a transfer that is given up: the daemon drops it. */
  abort(): Promise<void> {
    return this.#queue(() => this.#native.abort());
  }

  #queue<T>(call: () => Promise<T>): Promise<T> {
    const next = this.#last.then(call, call);
    this.#last = next.catch(() => undefined);
    return next;
  }
}
