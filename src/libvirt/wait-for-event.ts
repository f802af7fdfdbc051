// Waiting for something libvirt reports, through its events, with an AbortSignal and a
// time limit. The listener and libvirt's registration are in place before the condition
// is first checked, so an event sent between the check and the wait cannot be missed.
import type { ConnectionEventMap, EventKind } from './events.js';

/** What a wait for an event needs of its connection. */
export interface EventWaitHost {
  on(kind: EventKind, listener: (...args: never) => void): unknown;
  off(kind: EventKind, listener: (...args: never) => void): unknown;
  eventsReady(...kinds: EventKind[]): Promise<void>;
}

/** A result other than `undefined` or `false` ends the wait with it. */
export type WaitResult<R> = R | undefined | false;

/** Options of `Connection.waitFor()`. */
export interface WaitForOptions<Args extends unknown[], R> {
  /**
   * Called with the arguments of each event of the kind: anything other than
   * `undefined` or `false` ends the wait with that value; throwing ends it with
   * that error.
   */
  match: (...args: Args) => WaitResult<R>;
  /**
   * Whether what is awaited has happened already (events sent before the wait
   * began, or never sent). Called once libvirt's registration is in place, and
   * again every `recheckMs` when that is set; answers like `match`.
   */
  check?: () => WaitResult<R> | Promise<WaitResult<R>>;
  /**
   * Calls `check` again this long after its last answer, so that a lost event
   * or a registration libvirt refused delays the end of the wait by this much
   * at most instead of making it last forever. With it, a refused registration
   * does not end the wait (it is still reported as `'registration-error'`).
   */
  recheckMs?: number;
  /** Ends the wait, rejecting with the signal's reason. */
  signal?: AbortSignal;
  /** Ends the wait after this long, rejecting with an error named `TimeoutError`. */
  timeoutMs?: number;
  /** What is awaited, for the timeout's message ("the backup job on vm1 to end"). */
  description?: string;
}

/**
 * Resolves with the first answer of `options.match` (or `options.check`) other
 * than `undefined` and `false`. Its listener is removed however the wait ends.
 */
export function waitForEvent<E extends EventKind, R>(
  host: EventWaitHost,
  kind: E,
  options: WaitForOptions<ConnectionEventMap[E], R>,
): Promise<Exclude<R, undefined | false>> {
  try {
    checkOptions(options);
  } catch (error) {
    return Promise.reject(error as Error);
  }
  const { match, check, recheckMs, signal, timeoutMs } = options;
  // A signal's reason may be any value; it is passed on as it is.
  if (signal?.aborted === true) return Promise.reject(signal.reason as Error);
  return new Promise((resolve, reject) => {
    let settled = false;
    let timeout: NodeJS.Timeout | undefined;
    let recheck: NodeJS.Timeout | undefined;
    const finish = (outcome: { value: Exclude<R, undefined | false> } | { error: unknown }): void => {
      if (settled) return;
      settled = true;
      host.off(kind, onEvent);
      clearTimeout(timeout);
      clearTimeout(recheck);
      signal?.removeEventListener('abort', onAbort);
      if ('value' in outcome) resolve(outcome.value);
      else reject(outcome.error as Error);
    };
    const answer = (result: WaitResult<R>): boolean => {
      if (result === undefined || result === false) return false;
      finish({ value: result as Exclude<R, undefined | false> });
      return true;
    };
    const onEvent = (...args: ConnectionEventMap[E]): void => {
      if (settled) return;
      try {
        answer(match(...args));
      } catch (error) {
        finish({ error });
      }
    };
    const onAbort = (): void => finish({ error: signal!.reason });
    const runCheck = async (): Promise<void> => {
      if (settled || check === undefined) return;
      let answered: boolean;
      try {
        answered = answer(await check());
      } catch (error) {
        return finish({ error });
      }
      if (!answered && !settled && recheckMs !== undefined) recheck = setTimeout(() => void runCheck(), recheckMs);
    };

    host.on(kind, onEvent);
    signal?.addEventListener('abort', onAbort, { once: true });
    // A 'newListener' listener may have aborted it while ours was being added.
    if (signal?.aborted === true) return onAbort();
    if (timeoutMs !== undefined) {
      timeout = setTimeout(() => {
        const error = new Error(`timed out after ${timeoutMs} ms waiting for ${options.description ?? `a ${kind} event`}`);
        error.name = 'TimeoutError';
        finish({ error });
      }, timeoutMs);
    }
    host.eventsReady(kind).then(
      () => runCheck(),
      (error: unknown) => (recheckMs === undefined ? finish({ error }) : runCheck()),
    );
  });
}

/** setTimeout's longest delay; a longer one would fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

function checkOptions(options: WaitForOptions<never, unknown>): void {
  if (typeof options?.match !== 'function') throw new TypeError('options.match must be a function');
  if (options.check !== undefined && typeof options.check !== 'function') throw new TypeError('options.check must be a function');
  for (const [field, min] of [
    ['recheckMs', 1],
    ['timeoutMs', 0],
  ] as const) {
    const value = options[field];
    if (value !== undefined && !(typeof value === 'number' && value >= min && value <= MAX_TIMER_MS)) {
      throw new TypeError(`options.${field} must be a number of milliseconds from ${min} to ${MAX_TIMER_MS}, got ${String(value)}`);
    }
  }
  if (options.recheckMs !== undefined && options.check === undefined) throw new TypeError('options.recheckMs needs options.check');
}
