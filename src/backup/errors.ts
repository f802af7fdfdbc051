/**
 * Why a backup-set operation failed. The CLI maps these to exit codes and messages,
 * so every code names a situation the user can act on.
 */
export type BackupSetErrorCode =
  /** The set directory does not exist. */
  | 'SET_NOT_FOUND'
  /** The directory exists but holds no manifest.json. */
  | 'NOT_A_SET'
  /** `create` found a manifest already there. */
  | 'SET_EXISTS'
  /** The directory or manifest cannot be read or written (permissions, I/O). */
  | 'SET_IO'
  /** manifest.json is not valid JSON or does not follow the schema. */
  | 'MANIFEST_INVALID'
  /** manifest.json was written by a newer, incompatible version. */
  | 'MANIFEST_TOO_NEW'
  /** Another process holds the set's write lock. */
  | 'SET_LOCKED'
  /** A run that is still alive is writing the set (journal present, pid alive). */
  | 'RUN_IN_PROGRESS'
  /** The set belongs to a different domain. */
  | 'FOREIGN_DOMAIN'
  /** A file of a chain is missing, unreadable as qcow2, or its backing pointer disagrees with the manifest. */
  | 'CHAIN_BROKEN'
  /** A qcow2 image uses a feature our reader does not handle (encryption, external data file, ...). */
  | 'IMAGE_UNSUPPORTED'
  /** A backup record offered for commit is inconsistent with the set or with its files. */
  | 'RECORD_INVALID'
  /** A file's bytes do not match the checksum the manifest recorded: it is damaged. */
  | 'CHECKSUM_MISMATCH'
  /** The requested backup id or disk target is not in the set. */
  | 'NOT_FOUND'
  /** An output file exists and overwriting was not requested. */
  | 'OUTPUT_EXISTS'
  /** A caller passed an option that makes no sense (keep < 1, unknown format, ...). */
  | 'INVALID_ARGUMENT'
  /** qemu-img failed or is not installed; the message carries its stderr. */
  | 'QEMU_IMG_FAILED'
  /** A domain recovered from the set runs from files the operation would change or delete. */
  | 'SET_IN_USE'
  /** The operation was aborted through its AbortSignal. */
  | 'ABORTED';

/** A backup set that cannot be opened, read, changed or trusted; `code` says why and `path` names the file. */
export class BackupSetError extends Error {
  override name = 'BackupSetError';
  readonly code: BackupSetErrorCode;
  /** The file or directory the error is about, when there is one. */
  readonly path: string | undefined;

  constructor(code: BackupSetErrorCode, message: string, options: { path?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.path = options.path;
  }
}

/** Whether `error` is a `BackupSetError`, with the given code when one is given. */
export function isBackupSetError(error: unknown, code?: BackupSetErrorCode): error is BackupSetError {
  return error instanceof BackupSetError && (code === undefined || error.code === code);
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortedError(signal);
}

export function abortedError(signal: AbortSignal): BackupSetError {
  const reason: unknown = signal.reason;
  const detail = reason instanceof Error ? reason.message : reason === undefined ? '' : String(reason);
  return new BackupSetError('ABORTED', `Aborted${detail && detail !== 'This operation was aborted' ? `: ${detail}` : ''}`, {
    cause: reason,
  });
}
