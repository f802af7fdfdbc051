// Keeps a file being written front to back from piling up in the page cache: each range
// that lands is sent to the disk at once, and a window behind the writer it is waited
// for and dropped from the cache (what nbdcopy does). The final fsync then has almost
// nothing left to write, and a backup larger than RAM does not evict everything else.
import { addon } from '../native.js';

/** Bytes landed but not yet waited for; the disk works on these while the copy goes on. */
const WINDOW_BYTES = 64 * 2 ** 20;

/** Errors meaning "this file system cannot do that": the final fsync alone must do. */
const UNSUPPORTED = new Set(['EINVAL', 'ENOSYS', 'EOPNOTSUPP', 'ESPIPE', 'ENOTSUP']);

export class FileWriteback {
  readonly #fd: number;
  #enabled = true;
  /** Ranges started and not yet finished, oldest first. */
  readonly #started: Array<{ offset: number; length: number }> = [];
  #startedBytes = 0;
  /** The one finish in progress (they run one at a time, oldest first). */
  #finishing: Promise<void> = Promise.resolve();
  /** Every native call not yet settled. */
  readonly #outstanding = new Set<Promise<void>>();
  #failure: unknown;

  constructor(fd: number) {
    this.#fd = fd;
  }

  /** `[offset, offset + length)` has landed in the page cache (writes may land in any order). */
  landed(offset: number, length: number): void {
    if (!this.#enabled || length === 0) return;
    this.#track(addon.startWriteback(this.#fd, offset, length));
    this.#started.push({ offset, length });
    this.#startedBytes += length;
    while (this.#startedBytes > WINDOW_BYTES) {
      const oldest = this.#started.shift()!;
      this.#startedBytes -= oldest.length;
      this.#finishing = this.#finishing.then(() => (this.#enabled ? addon.finishWriteback(this.#fd, oldest.offset, oldest.length, true) : undefined));
      this.#track(this.#finishing);
    }
  }

  /** Waits for the write-back in progress; the caller's fsync makes the file durable. */
  async drain(): Promise<void> {
    while (this.#outstanding.size > 0) await Promise.allSettled(this.#outstanding);
    if (this.#failure !== undefined) throw this.#failure;
  }

  #track(operation: Promise<void>): void {
    const settled = operation.then(
      () => undefined,
      (error: unknown) => {
        const code = (error as { code?: unknown }).code;
        this.#enabled = false;
        if (typeof code !== 'string' || !UNSUPPORTED.has(code)) this.#failure ??= error;
      },
    );
    this.#outstanding.add(settled);
    void settled.finally(() => this.#outstanding.delete(settled));
  }
}
