// Memory handed out, given back and handed out again. Fresh memory for every piece of a
// long transfer costs page faults, and V8 answers each few megabytes of new external
// memory with a full garbage collection: at hundreds of megabytes a second that was
// most of a volume upload's CPU.
import { once } from './once.js';

export class RecycledBuffers {
  readonly #spare: Buffer[] = [];

  /** Buffers of `bytes` each; at most `keep` given back are kept for reuse. */
  constructor(
    private readonly bytes: number,
    private readonly keep: number,
  ) {}

  /** A buffer given back earlier, or new memory of its own. */
  take(): Buffer {
    return this.#spare.pop() ?? Buffer.allocUnsafeSlow(this.bytes);
  }

  /** Gives `buffer` back: it may be handed out again at once. */
  giveBack(buffer: Buffer): void {
    if (this.#spare.length < this.keep) this.#spare.push(buffer);
  }

  /** What a holder of `buffer` calls once done with it; calls after the first do nothing. */
  releaseOf(buffer: Buffer): () => void {
    return once(() => this.giveBack(buffer));
  }
}
