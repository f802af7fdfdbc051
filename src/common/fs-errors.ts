// Plain words for Node's file-system errors, shared by every layer that touches files.

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
