// Errors crossing between the pull copy's thread and the run: a structured clone keeps an
// error's message but not its class or its `code`, and the run tells failures apart by
// both (an NBD failure is a failed job, ENOSPC a full disk, a BackupError says itself).
import { isNativeError } from 'node:util/types';

import { NbdConnectionError, NbdError, NbdOptionError, NbdProtocolError, NbdTimeoutError } from '../../nbd/index.js';
import { BackupError, type BackupErrorCode } from './engine-types.js';

/** An error as one thread describes it to the other. */
export interface SentError {
  kind: 'nbd' | 'nbd-option' | 'nbd-protocol' | 'nbd-timeout' | 'nbd-connection' | 'backup' | 'other';
  name: string;
  message: string;
  stack: string | undefined;
  /** The fields callers read: `code`, `errno`, `syscall`, `path`, and the NBD errors' own. */
  fields: Record<string, string | number | undefined>;
  cause: SentError | undefined;
}

const FIELDS = ['code', 'errno', 'syscall', 'path', 'command', 'offset', 'option'] as const;

export function sendError(error: unknown, depth = 0): SentError {
  if (!isNativeError(error)) {
    return { kind: 'other', name: 'Error', message: String(error), stack: undefined, fields: {}, cause: undefined };
  }
  const fields: SentError['fields'] = {};
  for (const field of FIELDS) {
    const value = (error as unknown as Record<string, unknown>)[field];
    if (typeof value === 'string' || typeof value === 'number') fields[field] = value;
  }
  return {
    kind: kindOf(error),
    name: error.name,
    message: error.message,
    stack: error.stack,
    fields,
    cause: error.cause !== undefined && depth < 4 ? sendError(error.cause, depth + 1) : undefined,
  };
}

function kindOf(error: Error): SentError['kind'] {
  if (error instanceof NbdError) return 'nbd';
  if (error instanceof NbdOptionError) return 'nbd-option';
  if (error instanceof NbdProtocolError) return 'nbd-protocol';
  if (error instanceof NbdTimeoutError) return 'nbd-timeout';
  if (error instanceof NbdConnectionError) return 'nbd-connection';
  if (error instanceof BackupError) return 'backup';
  return 'other';
}

/** The error `sendError` described, of its class again, with its fields and cause. */
export function receivedError(sent: SentError): Error {
  const cause = sent.cause === undefined ? {} : { cause: receivedError(sent.cause) };
  const { fields } = sent;
  const text = (key: string) => (typeof fields[key] === 'string' ? (fields[key] as string) : '');
  let error: Error;
  switch (sent.kind) {
    case 'nbd':
      error = new NbdError(Number(fields['errno'] ?? 0), text('command'), '', typeof fields['offset'] === 'number' ? fields['offset'] : undefined);
      break;
    case 'nbd-option':
      error = new NbdOptionError(text('option'), text('code'));
      break;
    case 'nbd-protocol':
      error = new NbdProtocolError(sent.message, cause);
      break;
    case 'nbd-timeout':
      error = new NbdTimeoutError(sent.message, cause);
      break;
    case 'nbd-connection':
      error = new NbdConnectionError(sent.message, cause);
      break;
    case 'backup':
      error = new BackupError(text('code') as BackupErrorCode, sent.message, cause);
      break;
    default: {
      error = new Error(sent.message, cause);
      error.name = sent.name;
      for (const [key, value] of Object.entries(fields)) {
        if (value !== undefined) (error as unknown as Record<string, unknown>)[key] = value;
      }
    }
  }
  // The class's own constructor words the message; the thread's words are the true ones.
  if (error.message !== sent.message) error.message = sent.message;
  if (sent.stack !== undefined) error.stack = sent.stack;
  if (sent.cause !== undefined && error.cause === undefined)
    Object.defineProperty(error, 'cause', { value: receivedError(sent.cause), configurable: true, writable: true });
  return error;
}
