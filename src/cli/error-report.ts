import { BackupError, type BackupErrorCode } from '../backup/engine-types.js';
import { BackupSetError, errnoCode, type BackupSetErrorCode } from '../backup/errors.js';
import { LibvirtError } from '../errors.js';
import { UsageError } from './args.js';
import { ExitCode } from './exit-codes.js';

/** What the user sees when a command fails: one line, a stable code for scripts, an exit code. */
export interface ErrorReport {
  exitCode: number;
  /** `USAGE`, a `BackupError`/`BackupSetError` code, a libvirt `VIR_ERR_*` name, or `INTERNAL`. */
  code: string;
  message: string;
}

const BACKUP_EXIT: Record<BackupErrorCode, number> = {
  DOMAIN_NOT_FOUND: ExitCode.USAGE,
  DOMAIN_NOT_RUNNING: ExitCode.USAGE,
  UNSUPPORTED: ExitCode.USAGE,
  INVALID_ARGUMENT: ExitCode.USAGE,
  NO_DISKS: ExitCode.USAGE,
  CHAIN_UNUSABLE: ExitCode.USAGE,
  DOMAIN_BUSY: ExitCode.FAILED,
  NO_SPACE: ExitCode.FAILED,
  DOMAIN_STOPPED: ExitCode.FAILED,
  DAEMON_LOST: ExitCode.FAILED,
  JOB_FAILED: ExitCode.FAILED,
  ABORTED: ExitCode.FAILED,
};

const SET_EXIT: Record<BackupSetErrorCode, number> = {
  SET_NOT_FOUND: ExitCode.USAGE,
  NOT_A_SET: ExitCode.USAGE,
  SET_EXISTS: ExitCode.USAGE,
  SET_IO: ExitCode.FAILED,
  MANIFEST_INVALID: ExitCode.USAGE,
  MANIFEST_TOO_NEW: ExitCode.USAGE,
  SET_LOCKED: ExitCode.FAILED,
  RUN_IN_PROGRESS: ExitCode.FAILED,
  FOREIGN_DOMAIN: ExitCode.USAGE,
  CHAIN_BROKEN: ExitCode.USAGE,
  RECORD_INVALID: ExitCode.FAILED,
  CHECKSUM_MISMATCH: ExitCode.PROBLEMS_FOUND,
  NOT_FOUND: ExitCode.USAGE,
  OUTPUT_EXISTS: ExitCode.USAGE,
  INVALID_ARGUMENT: ExitCode.USAGE,
  QEMU_IMG_FAILED: ExitCode.FAILED,
  ABORTED: ExitCode.FAILED,
};

/** Errno codes that mean "the path given is wrong for this", as opposed to a failing device. */
const BAD_PATH_ERRNO = new Set(['EACCES', 'EPERM', 'EROFS', 'ENOTDIR', 'EISDIR', 'ENOENT']);

/** libvirt errors about what the user named rather than about the daemon or the job. */
const LIBVIRT_BAD_INPUT = new Set(['VIR_ERR_NO_DOMAIN', 'VIR_ERR_NO_DOMAIN_CHECKPOINT', 'VIR_ERR_INVALID_ARG', 'VIR_ERR_NO_SUPPORT', 'VIR_ERR_OPERATION_UNSUPPORTED']);

/** A failure the CLI itself detects, with the code and exit code it calls for. */
export class CliError extends Error {
  override name = 'CliError';

  constructor(
    readonly code: string,
    readonly exitCode: number,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function reportFor(error: unknown): ErrorReport {
  if (error instanceof CliError) return { exitCode: error.exitCode, code: error.code, message: error.message };
  if (error instanceof UsageError) {
    const hint = error.command ? ` (see 'libvirt-backup ${error.command} --help')` : ` (see 'libvirt-backup --help')`;
    return { exitCode: ExitCode.USAGE, code: 'USAGE', message: `${error.message}${hint}` };
  }
  if (error instanceof BackupSetError) {
    // An unwritable or unreadable path is bad input; a full or failing disk is a failure.
    const exitCode = error.code === 'SET_IO' && BAD_PATH_ERRNO.has(errnoCode(error.cause) ?? '') ? ExitCode.USAGE : (SET_EXIT[error.code] ?? ExitCode.FAILED);
    return { exitCode, code: error.code, message: error.message };
  }
  if (error instanceof BackupError) return { exitCode: BACKUP_EXIT[error.code] ?? ExitCode.FAILED, code: error.code, message: error.message };
  if (error instanceof LibvirtError) {
    return { exitCode: LIBVIRT_BAD_INPUT.has(error.codeName) ? ExitCode.USAGE : ExitCode.FAILED, code: error.codeName, message: `libvirt: ${error.message}` };
  }
  const errno = errnoCode(error);
  if (errno !== undefined && error instanceof Error) {
    return { exitCode: BAD_PATH_ERRNO.has(errno) ? ExitCode.USAGE : ExitCode.FAILED, code: errno, message: error.message };
  }
  return { exitCode: ExitCode.FAILED, code: 'INTERNAL', message: error instanceof Error ? error.message : String(error) };
}

/** Message text stays on one line: scripts grep stderr, and log lines must not split. */
export function oneLine(message: string): string {
  return message.replace(/\s*\n\s*/g, ' ').trim();
}

export function debugEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return env['LIBVIRT_BACKUP_DEBUG'] === '1';
}
