import { isNativeError } from 'node:util/types';

/**
 * The error an aborted operation rejects with. The DOMException that AbortSignal.timeout()
 * and abort() produce becomes a real Error with the same name ('TimeoutError',
 * 'AbortError') and message, so callers can rely on stack traces and `instanceof Error`.
 */
export function abortReason(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  if (isNativeError(reason)) return reason;
  const described = reason as { name?: unknown; message?: unknown } | undefined;
  const message = typeof described?.message === 'string' ? described.message : 'The operation was aborted';
  const error = new Error(message, { cause: reason });
  error.name = typeof described?.name === 'string' ? described.name : 'AbortError';
  return error;
}
