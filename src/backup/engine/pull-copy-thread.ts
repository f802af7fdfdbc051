// A run's pull copy thread, as the run sees it: exports opened, copied and closed there,
// each call a promise. The run's own thread only hears replies and how far each copy is,
// so a service that runs backups in-process keeps its event loop free for its own work.
import type { Worker } from 'node:worker_threads';

import { siblingModule, startModuleWorker } from '../../common/module-worker.js';
import { abortReason } from '../../common/abort-reason.js';
import type { Qcow2WriteResult } from '../qcow2/qcow2-writer.js';
import { receivedError } from './copy-thread-errors.js';
import type { CopyTarget, ExportPlan, ExportRequest } from './export-copy.js';
import type { FromCopyThread, ToCopyThread } from './pull-copy-messages.js';

/** A request as the caller words it: the thread's message less the number this side gives it. */
type Request<M = Exclude<ToCopyThread, { type: 'abort' }>> = M extends unknown ? Omit<M, 'request'> : never;

interface Pending {
  resolve(value: unknown): void;
  reject(error: Error): void;
  signal: AbortSignal | undefined;
}

/** One export held by the thread. */
export interface ThreadExport {
  readonly plan: ExportPlan;
  /** Copies the export into a new file; `onData` hears the data bytes read so far. */
  copy(target: CopyTarget, onData: (bytesRead: number) => void, signal: AbortSignal): Promise<Qcow2WriteResult>;
  /** Closes the export; never fails. */
  close(): Promise<void>;
}

/**
 * How long a thread a run has finished with is kept for the next run: a thread takes
 * about 100 ms to boot (more through tsx), as much as a whole incremental backup of an
 * idle guest, and a service or `backup --all` runs one backup after another.
 */
const SPARE_IDLE_MS = 30_000;

/** The thread kept between runs, unreferenced (it never keeps the process alive). */
let spare: { thread: PullCopyThread; expiry: NodeJS.Timeout } | undefined;

export class PullCopyThread {
  readonly #worker: Worker;
  readonly #pending = new Map<number, Pending>();
  readonly #onData = new Map<number, (bytesRead: number) => void>();
  #nextRequest = 1;
  #nextExport = 1;
  #openExports = 0;
  #stopped: Error | null = null;
  readonly #exited: Promise<void>;

  /**
   * Starts the thread. It boots while the caller goes on (a run starts its thread with
   * the run, so the boot overlaps the calls that start the job); calls wait for it.
   * The owner must `stop()` or `release()` it. Runs use `acquire()`.
   */
  constructor() {
    this.#worker = startModuleWorker(siblingModule(import.meta.url, 'pull-copy-worker'), null);
    this.#worker.on('message', (message: FromCopyThread) => this.#receive(message));
    this.#exited = new Promise((resolve) => {
      this.#worker.once('error', (error) => this.#fail(new Error(`the pull copy thread failed: ${error.message}`, { cause: error })));
      this.#worker.once('exit', (code) => {
        this.#fail(new Error(`the pull copy thread ended (exit code ${code})`));
        resolve();
      });
    });
  }

  /** The thread kept from an earlier run, or a new one. */
  static acquire(): PullCopyThread {
    const kept = spare;
    spare = undefined;
    if (kept !== undefined) {
      clearTimeout(kept.expiry);
      if (kept.thread.#stopped === null) {
        kept.thread.#worker.ref();
        return kept.thread;
      }
    }
    return new PullCopyThread();
  }

  /** Starts a thread for the next `acquire()` unless one is kept already: a run calls it as it starts, so the boot overlaps its checks. */
  static prewarm(): void {
    if (spare === undefined) PullCopyThread.#keep(new PullCopyThread());
  }

  /** Done with the thread: kept for the next run when it is sound and idle, else ended; never fails. */
  async release(): Promise<void> {
    if (this.#stopped !== null || this.#openExports > 0 || this.#pending.size > 0 || spare !== undefined) return this.stop();
    PullCopyThread.#keep(this);
  }

  static #keep(thread: PullCopyThread): void {
    thread.#worker.unref();
    const expiry = setTimeout(() => {
      if (spare?.thread === thread) spare = undefined;
      void thread.stop();
    }, SPARE_IDLE_MS).unref();
    spare = { thread, expiry };
  }

  /** Opens an export in the thread and works out what it will copy. */
  async open(spec: ExportRequest, signal: AbortSignal): Promise<ThreadExport> {
    const exportId = this.#nextExport++;
    this.#openExports++;
    let plan: ExportPlan;
    try {
      plan = (await this.#call({ type: 'open', exportId, spec }, signal)) as ExportPlan;
    } catch (error) {
      this.#openExports--;
      throw error;
    }
    let closing: Promise<void> | undefined;
    return {
      plan,
      copy: async (target, onData, copySignal) => {
        this.#onData.set(exportId, onData);
        try {
          return (await this.#call({ type: 'copy', exportId, target }, copySignal)) as Qcow2WriteResult;
        } finally {
          this.#onData.delete(exportId);
        }
      },
      close: () => {
        closing ??= this.#call({ type: 'close', exportId }, undefined).then(
          () => {
            this.#openExports--;
          },
          () => undefined,
        );
        return closing;
      },
    };
  }

  /** Ends the thread, and with it any export still open there; never fails. */
  async stop(): Promise<void> {
    if (this.#stopped === null) await this.#worker.terminate();
    await this.#exited;
  }

  #call(message: Request, signal: AbortSignal | undefined): Promise<unknown> {
    if (this.#stopped !== null) return Promise.reject(this.#stopped);
    const request = this.#nextRequest++;
    return new Promise((resolve, reject) => {
      // The thread must stop before the call settles, even when aborted: a file still
      // being written, or a handshake still under way, must not outlive the run's step.
      const abort = () => this.#worker.postMessage({ type: 'abort', request } satisfies ToCopyThread);
      signal?.addEventListener('abort', abort, { once: true });
      const done = () => signal?.removeEventListener('abort', abort);
      this.#pending.set(request, {
        resolve: (value) => {
          done();
          resolve(value);
        },
        reject: (error: Error) => {
          done();
          reject(error);
        },
        signal,
      });
      this.#worker.postMessage({ ...message, request } as ToCopyThread);
      if (signal?.aborted) abort();
    });
  }

  #receive(message: FromCopyThread): void {
    if (message.type === 'data') {
      this.#onData.get(message.exportId)?.(message.bytesRead);
      return;
    }
    const pending = this.#pending.get(message.request);
    if (pending === undefined) return;
    this.#pending.delete(message.request);
    if (message.error === undefined) {
      pending.resolve(message.value);
    } else if (pending.signal?.aborted) {
      // What the thread saw was the abort; the run's own reason says why.
      pending.reject(abortReason(pending.signal));
    } else {
      pending.reject(receivedError(message.error));
    }
  }

  #fail(error: Error): void {
    this.#stopped ??= error;
    for (const pending of this.#pending.values()) pending.reject(error);
    this.#pending.clear();
  }
}
