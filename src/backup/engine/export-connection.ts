// The pull path's connection to libvirt's NBD export: the socket it connects to, and
// what a failure of that connection means for the run.
import { describeFsError } from '../../common/fs-errors.js';
import { NbdConnectionError, NbdError, NbdOptionError, NbdProtocolError, NbdTimeoutError } from '../../nbd/index.js';
import { BackupError } from './engine-types.js';

/**
 * For tests only: the path of a unix socket to connect to instead of libvirt's export
 * socket, where a test puts a proxy in front of the export (one that cuts the
 * connection mid-transfer, say). The proxy finds libvirt's socket in the job's XML.
 */
export const TEST_NBD_PROXY_SOCKET_VARIABLE = 'LIBVIRT_BACKUP_TEST_NBD_PROXY_SOCKET';

export function exportSocketToConnect(libvirtSocket: string, env: NodeJS.ProcessEnv = process.env): string {
  return env[TEST_NBD_PROXY_SOCKET_VARIABLE] || libvirtSocket;
}

/**
 * A connection to the export that cannot be made means the job's NBD server is gone
 * (stopped, or its QEMU died): a failed job, not a wrong path given by the user, which is
 * what a bare ENOENT from connect() would otherwise be taken for.
 */
export function unreachableExportError(error: unknown, socket: string): unknown {
  const syscall = (error as { syscall?: unknown } | null)?.syscall;
  if (!(error instanceof Error) || syscall !== 'connect') return error;
  return new BackupError('JOB_FAILED', `cannot connect to the backup job's NBD export at ${socket} (${describeFsError(error)}): its NBD server is gone`, {
    cause: error,
  });
}

/** An NBD failure while reading a disk, named as the failed transfer it is ("the server closed the connection" alone says neither what nor which). */
export function exportReadError(target: string, error: unknown): unknown {
  const nbd =
    error instanceof NbdConnectionError ||
    error instanceof NbdError ||
    error instanceof NbdOptionError ||
    error instanceof NbdProtocolError ||
    error instanceof NbdTimeoutError;
  if (!nbd) return error;
  return new BackupError('JOB_FAILED', `reading ${target} from the backup job's NBD export failed: ${error.message}; nothing was kept from this run`, {
    cause: error,
  });
}
