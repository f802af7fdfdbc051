import { abortReason } from './errors.js';
import type { Connection } from './connection.js';

interface Waiter {
  bytes: number;
  resolve(connection: Connection): void;
  reject(error: Error): void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

/**
 * Spreads requests over the open connections and bounds what is in flight, both in
 * requests per connection (server queues are short) and in bytes (our memory).
 */
export class RequestScheduler {
  private readonly load = new Map<Connection, number>();
  private bytesInFlight = 0;
  private readonly waiters: Waiter[] = [];
  private failure: Error | undefined;

  constructor(
    private readonly requestsPerConnection: number,
    private readonly maxBytesInFlight: number,
  ) {}

  get connections(): Connection[] {
    return [...this.load.keys()];
  }

  add(connection: Connection): void {
    if (this.failure) {
      connection.destroy(this.failure);
      return;
    }
    this.load.set(connection, 0);
    connection.onFailure((error) => this.remove(connection, error));
    this.wake();
  }

  /** Stops handing out connections; waiting and future callers get `error`. */
  shutdown(error: Error): void {
    this.failure ??= error;
    for (const waiter of this.waiters.splice(0)) {
      waiter.signal?.removeEventListener('abort', waiter.onAbort!);
      waiter.reject(this.failure);
    }
  }

  acquire(bytes: number, signal?: AbortSignal): Promise<Connection> {
    if (this.failure) return Promise.reject(this.failure);
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    if (this.waiters.length === 0) {
      const connection = this.pick(bytes);
      if (connection) return Promise.resolve(connection);
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = { bytes, resolve, reject, signal, onAbort: undefined };
      if (signal) {
        waiter.onAbort = () => {
          const at = this.waiters.indexOf(waiter);
          if (at >= 0) this.waiters.splice(at, 1);
          reject(abortReason(signal));
          this.wake();
        };
        signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      this.waiters.push(waiter);
    });
  }

  release(connection: Connection, bytes: number): void {
    this.bytesInFlight -= bytes;
    const load = this.load.get(connection);
    if (load !== undefined) this.load.set(connection, load - 1);
    this.wake();
  }

  private pick(bytes: number): Connection | undefined {
    // One oversized request may always go alone, or it would wait forever.
    if (this.bytesInFlight > 0 && this.bytesInFlight + bytes > this.maxBytesInFlight) return undefined;
    let best: Connection | undefined;
    let bestLoad = this.requestsPerConnection;
    for (const [connection, load] of this.load) {
      if (load < bestLoad) {
        best = connection;
        bestLoad = load;
      }
    }
    if (best) {
      this.load.set(best, bestLoad + 1);
      this.bytesInFlight += bytes;
    }
    return best;
  }

  private wake(): void {
    while (this.waiters.length > 0) {
      const head = this.waiters[0]!;
      const connection = this.pick(head.bytes);
      if (!connection) return;
      this.waiters.shift();
      head.signal?.removeEventListener('abort', head.onAbort!);
      head.resolve(connection);
    }
  }

  private remove(connection: Connection, error: Error): void {
    if (!this.load.delete(connection)) return;
    if (this.load.size === 0) {
      this.shutdown(error);
    }
  }
}
