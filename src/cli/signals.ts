import { exitCodeForSignal } from './exit-codes.js';
import type { CommandName } from './help.js';

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
 * the command undoes what it started (a backup or prune ends its job and removes this
 * run's files, a restore its partial output; verify and list have nothing to undo) and
 * returns, and the process exits with 128 + signal number. A further signal exits without waiting for that cleanup, but
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

/** What a signal does to each command, in words that fit it: verify and list write nothing. */
export interface InterruptionWording {
  /** Said on the first signal, while the command stops. */
  stopping: string;
  /** The final error, once the command has stopped: what was undone and what is intact. */
  outcome: string;
  /** Said when a further signal will end the process before the cleanup is done. */
  unfinishedCleanup: string;
}

export function interruptionWording(command: CommandName, signal: NodeJS.Signals): InterruptionWording {
  const again = '(send it again to exit without waiting for that)';
  switch (command) {
    case 'backup':
    case 'prune':
      return {
        stopping: `${signal} received: stopping the ${command} and removing the partial files of this run ${again}`,
        outcome: `interrupted by ${signal}: the partial files of this ${command} were removed and manifest.json is unchanged`,
        unfinishedCleanup: 'partial files may remain (the next backup or prune of the set removes them); manifest.json is intact',
      };
    case 'restore':
      return {
        stopping: `${signal} received: stopping the restore and removing its partial output ${again}`,
        outcome: `interrupted by ${signal}: the partial output of this restore was removed; the backup set was only read`,
        unfinishedCleanup: 'a partial output file (*.partial-*) may remain next to the --to path; the backup set was only read',
      };
    case 'run':
      return {
        stopping: `${signal} received: stopping the run and removing what it made so far ${again}`,
        outcome: `interrupted by ${signal}: the new domain and its overlays were removed; the backup set was only read`,
        unfinishedCleanup: 'the new domain or its overlays may remain (undefine it and remove them); the backup set was only read',
      };
    case 'migrate-storage':
      return {
        stopping: `${signal} received: stopping the copies; the domain keeps running on its overlays ${again}`,
        outcome: `interrupted by ${signal}: the copies were stopped and removed; the domain runs on its overlays as before`,
        unfinishedCleanup: 'a partial copy may remain at the destination (remove it before the next attempt); the domain runs on its overlays',
      };
    case 'export':
      return {
        stopping: `${signal} received: stopping the export`,
        outcome: `the export ended (${signal})`,
        unfinishedCleanup: 'qemu-nbd may still be running; the backup set was only read',
      };
    case 'verify':
    case 'list':
      return {
        stopping: `${signal} received: stopping the ${command}; it changes nothing`,
        outcome: `interrupted by ${signal}: the ${command} stopped before the end; nothing was changed`,
        unfinishedCleanup: 'nothing was changed',
      };
  }
}
