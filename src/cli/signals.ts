import { exitCodeForSignal } from './exit-codes.js';

const HANDLED_SIGNALS = ['SIGINT', 'SIGTERM'] as const;

/**
 * How long the first signal's cleanup runs undisturbed. A terminal's Ctrl-C pressed twice,
 * or a supervisor sending SIGTERM then SIGINT, arrives within milliseconds: cutting the
 * cleanup then would leave the libvirt job running and partial files behind.
 */
export const DEFAULT_CLEANUP_GRACE_MS = 3000;

export interface SignalAbortOptions {
  graceMs?: number;
  /** Told once, on the first signal. */
  onAbort?: (signal: NodeJS.Signals) => void;
  /** Told when a further signal will end the process before the cleanup is done. */
  onForcedExit?: (signal: NodeJS.Signals, inMs: number) => void;
  exit?: (code: number) => void;
  now?: () => number;
  emitter?: Pick<NodeJS.Process, 'on' | 'off'>;
}

/**
 * Turns SIGINT/SIGTERM into an abort of the running command. The first signal aborts:
 * the command stops its job, removes this run's files and returns, and the process exits
 * with 128 + signal number. A further signal exits without waiting for that cleanup, but
 * never before the cleanup has had `graceMs` to run. Even a forced exit cannot leave a
 * half-written manifest (it is replaced by rename) and the set's journal lets the next
 * write-open remove what is left.
 */
export class SignalAbort {
  readonly #controller = new AbortController();
  readonly #graceMs: number;
  readonly #options: SignalAbortOptions;
  readonly #emitter: Pick<NodeJS.Process, 'on' | 'off'>;
  readonly #now: () => number;
  #first: { signal: NodeJS.Signals; at: number } | null = null;
  #forcedExit: ReturnType<typeof setTimeout> | null = null;
  readonly #listener = (signal: NodeJS.Signals): void => this.#onSignal(signal);

  constructor(options: SignalAbortOptions = {}) {
    this.#options = options;
    this.#graceMs = options.graceMs ?? DEFAULT_CLEANUP_GRACE_MS;
    this.#emitter = options.emitter ?? process;
    this.#now = options.now ?? Date.now;
    for (const signal of HANDLED_SIGNALS) this.#emitter.on(signal, this.#listener);
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** The signal that aborted the command, if one did. */
  get received(): NodeJS.Signals | null {
    return this.#first?.signal ?? null;
  }

  /** The exit code the signal calls for, if one was received. */
  get exitCode(): number | null {
    return this.#first === null ? null : exitCodeForSignal(this.#first.signal);
  }

  /** Stops listening; signals get their default behaviour back. */
  dispose(): void {
    for (const signal of HANDLED_SIGNALS) this.#emitter.off(signal, this.#listener);
    if (this.#forcedExit !== null) clearTimeout(this.#forcedExit);
    this.#forcedExit = null;
  }

  #onSignal(signal: NodeJS.Signals): void {
    if (this.#first === null) {
      this.#first = { signal, at: this.#now() };
      this.#options.onAbort?.(signal);
      this.#controller.abort(new Error(`interrupted by ${signal}`));
      return;
    }
    if (this.#forcedExit !== null) return;
    const code = exitCodeForSignal(this.#first.signal);
    const remaining = Math.max(0, this.#first.at + this.#graceMs - this.#now());
    this.#options.onForcedExit?.(signal, remaining);
    const exit = this.#options.exit ?? ((value: number) => process.exit(value));
    if (remaining === 0) {
      exit(code);
      return;
    }
    // Unref'd: a cleanup that finishes first ends the process normally, with the same code.
    this.#forcedExit = setTimeout(() => exit(code), remaining);
    this.#forcedExit.unref();
  }
}
