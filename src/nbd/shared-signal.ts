import { setMaxListeners } from 'node:events';

/**
 * A signal that follows `signal`, for one call that hands it to many requests. Every
 * request in flight listens for the abort, and Node warns about a leak once more than
 * ten listeners wait on one signal; the caller's signal gets a single listener instead,
 * removed again by `release()`.
 */
export function shareSignal(signal: AbortSignal | undefined): { signal: AbortSignal | undefined; release(): void } {
  if (!signal) return { signal: undefined, release() {} };
  const shared = new AbortController();
  setMaxListeners(0, shared.signal);
  if (signal.aborted) {
    shared.abort(signal.reason);
    return { signal: shared.signal, release() {} };
  }
  const forward = (): void => shared.abort(signal.reason);
  signal.addEventListener('abort', forward, { once: true });
  return { signal: shared.signal, release: () => signal.removeEventListener('abort', forward) };
}
