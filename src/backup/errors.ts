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
  /** The operation was aborted through its AbortSignal. */
  | 'ABORTED';

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

/** Node's errno code of a system error, if it is one. */
export function errnoCode(error: unknown): string | undefined {
  if (typeof error === 'object' && error !== null && 'code' in error) {
    const code = (error as { code: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

export function describeFsError(error: unknown): string {
  const code = errnoCode(error);
  switch (code) {
    case 'ENOENT':
      return 'no such file or directory';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'ENOSPC':
      return 'no space left on device';
    case 'EROFS':
      return 'read-only file system';
    case 'ENOTDIR':
      return 'not a directory';
    case 'EISDIR':
      return 'is a directory';
    case 'ENAMETOOLONG':
      return 'file name too long';
    case 'ELOOP':
      return 'too many levels of symbolic links';
    case 'EIO':
      return 'input/output error';
    case 'EDQUOT':
      return 'disk quota exceeded';
    case 'EBUSY':
      return 'device or resource busy';
    case 'EMFILE':
    case 'ENFILE':
      return 'too many open files';
    default:
      return withoutNodeDecoration(error);
  }
}

/**
 * Node words system errors as `ENOTSUP: operation not supported on socket, open '/path'`:
 * callers already name the path, so keep only the description between code and syscall.
 */
function withoutNodeDecoration(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return /^E[A-Z0-9]+: (.+?)(?:, \w+ '.*')?$/s.exec(message)?.[1] ?? message;
}
