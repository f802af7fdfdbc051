// virConnectOpenAuth with a deadline: a host that never answers, a server that stalls
// the TLS handshake or a credential callback that never returns ends in a timeout
// error, never in a hang, and the attempt left behind keeps nothing alive.
import { checkConnectAuth, credentialHandler, withoutTerminalPrompts, type ConnectAuth } from './connect-auth.js';
import { connectFailureReasonAt, connectTimeoutError, LibvirtConnectError } from './connect-errors.js';
import { LibvirtError } from './errors.js';
import { nativeAddon, type NativeConnection } from './native.js';

/** How long `connect()` waits by default: connecting, the TLS or SSH handshake, authentication. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 30_000;

/**
 * The addon's own bound on a wait for credentials comes this much later than the
 * attempt's: the timer here gives up first and says why, the addon's bound only
 * frees its thread when nobody is left to give up (a worker that went away).
 */
const NATIVE_WAIT_SLACK_MS = 5_000;

export function checkTimeout(timeoutMs: unknown): number {
  if (timeoutMs === undefined) return DEFAULT_CONNECT_TIMEOUT_MS;
  if (typeof timeoutMs !== 'number' || Number.isNaN(timeoutMs) || timeoutMs < 0) {
    throw new TypeError(`options.timeoutMs must be a number of milliseconds >= 0 (0: no limit), got ${String(timeoutMs)}`);
  }
  return timeoutMs;
}

export async function openNative(uri: string | undefined, flags: number, auth: unknown, timeoutMs: unknown): Promise<NativeConnection> {
  checkConnectAuth(auth);
  const limit = checkTimeout(timeoutMs);
  const bounded = limit > 0 && Number.isFinite(limit);
  const opening = nativeAddon().openConnection(
    uri === undefined ? null : withoutTerminalPrompts(uri),
    flags,
    credentialHandler(auth as ConnectAuth | undefined),
    bounded ? limit + NATIVE_WAIT_SLACK_MS : 0,
  );
  const started = Date.now();
  return new Promise<NativeConnection>((resolve, reject) => {
    let timedOut = false;
    const timer = bounded
      ? setTimeout(() => {
          timedOut = true;
          opening.abandon();
          reject(connectTimeoutError(uri ?? null, limit));
        }, limit)
      : undefined;
    opening.promise.then(
      (native) => {
        clearTimeout(timer);
        if (timedOut) void native.close().catch(() => undefined);
        else resolve(native);
      },
      (error: unknown) => {
        clearTimeout(timer);
        if (timedOut) return;
        // The attempt ran out of time inside libvirt (a refused credential wait, say)
        // just before the timer: the time limit is still the reason.
        if (bounded && Date.now() - started >= limit) {
          reject(connectTimeoutError(uri ?? null, limit));
          return;
        }
        if (!(error instanceof LibvirtError)) {
          reject(error instanceof Error ? error : new Error(String(error)));
          return;
        }
        void connectFailureReasonAt(error, uri ?? null).then((reason) => reject(new LibvirtConnectError(error, reason, uri ?? null)));
      },
    );
  });
}
