import { BackupError, type BackupErrorCode } from '../backup/index.js';
import { BackupSetError, type BackupSetErrorCode } from '../backup/index.js';
import { RecoveryError, type RecoveryErrorCode } from '../backup/index.js';
import { describeFsError, errnoCode } from '../common/fs-errors.js';
import { LibvirtError } from '../index.js';
import { UsageError, type CommandArgs } from './args.js';
import { ExitCode } from './exit-codes.js';

/** What the user sees when a command fails: one line, a stable code for scripts, an exit code. */
export interface ErrorReport {
  exitCode: number;
  /**
   * `USAGE`, a `BackupError`/`BackupSetError` code, a `CliError` code (`UNSUPPORTED`, ...),
   * a libvirt `VIR_ERR_*` name, an errno name, or `INTERNAL`.
   */
  code: string;
  /** One line: the first line of a longer text, with how many lines were left out. */
  message: string;
  /** The whole text when `message` leaves lines out (a libvirt or qemu-img dump); for `--json`. */
  detail?: string;
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
  QUIESCE_FAILED: ExitCode.FAILED,
  ABORTED: ExitCode.FAILED,
};

const RECOVERY_EXIT: Record<RecoveryErrorCode, number> = {
  DOMAIN_EXISTS: ExitCode.USAGE,
  DOMAIN_NOT_FOUND: ExitCode.USAGE,
  DOMAIN_NOT_RUNNING: ExitCode.USAGE,
  OUTPUT_EXISTS: ExitCode.USAGE,
  INVALID_ARGUMENT: ExitCode.USAGE,
  COPY_FAILED: ExitCode.FAILED,
  EXPORT_FAILED: ExitCode.FAILED,
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
  IMAGE_UNSUPPORTED: ExitCode.FAILED,
  RECORD_INVALID: ExitCode.FAILED,
  CHECKSUM_MISMATCH: ExitCode.PROBLEMS_FOUND,
  NOT_FOUND: ExitCode.USAGE,
  OUTPUT_EXISTS: ExitCode.USAGE,
  INVALID_ARGUMENT: ExitCode.USAGE,
  QEMU_IMG_FAILED: ExitCode.FAILED,
  SET_IN_USE: ExitCode.FAILED,
  ABORTED: ExitCode.FAILED,
};

/** Errno codes that mean "the path given is wrong for this", as opposed to a failing device. */
const BAD_PATH_ERRNO = new Set(['EACCES', 'EPERM', 'EROFS', 'ENOTDIR', 'EISDIR', 'ENOENT', 'ENAMETOOLONG', 'ELOOP']);

/** libvirt errors about what the user named rather than about the daemon or the job. */
const LIBVIRT_BAD_INPUT = new Set([
  'VIR_ERR_NO_DOMAIN',
  'VIR_ERR_NO_DOMAIN_CHECKPOINT',
  'VIR_ERR_INVALID_ARG',
  'VIR_ERR_NO_SUPPORT',
  'VIR_ERR_OPERATION_UNSUPPORTED',
  // No driver accepts the URI: a misspelt --connect.
  'VIR_ERR_NO_CONNECT',
]);

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

/**
 * libvirt's thread for QEMU's events holds the domain while it waits for QEMU's
 * monitor, and other calls gave up after 30 s: QEMU is not answering. The one cause
 * seen (README, "Known problems") never ends by itself, and the message alone does
 * not say that the guest may be frozen with it.
 */
const QEMU_NOT_ANSWERING = /cannot acquire state change lock \(held by monitor=qemu-event\)/;
const QEMU_NOT_ANSWERING_HINT =
  "QEMU has not answered libvirt for over 30 s while handling its own events, and the guest may be frozen with it: QEMU 7.2 as Debian 12 ships it freezes if its NBD server stops while a client is still negotiating, and only the domain's stop (virsh destroy) ends that";

/**
 * `operation` names what the command was doing (`backup of domain 'vm1'`), so that a
 * libvirt error, which only says what libvirt found wrong, says what failed too.
 */
export function reportFor(error: unknown, operation?: string): ErrorReport {
  const report = fullReportFor(error, operation);
  const { line, more } = firstLine(report.message);
  if (more === 0) return { ...report, message: line };
  return { ...report, message: `${line} (${more} more line${more === 1 ? '' : 's'} in --json output)`, detail: report.detail ?? report.message };
}

function fullReportFor(error: unknown, operation: string | undefined): ErrorReport {
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
  if (error instanceof RecoveryError) return { exitCode: RECOVERY_EXIT[error.code], code: error.code, message: error.message };
  if (error instanceof LibvirtError) {
    const message = operation === undefined ? `libvirt: ${error.message}` : `${operation} failed in libvirt: ${error.message}`;
    return {
      exitCode: LIBVIRT_BAD_INPUT.has(error.codeName) ? ExitCode.USAGE : ExitCode.FAILED,
      code: error.codeName,
      message: QEMU_NOT_ANSWERING.test(error.message) ? `${message}; ${QEMU_NOT_ANSWERING_HINT}` : message,
    };
  }
  if (isSystemError(error)) {
    const path = typeof error.path === 'string' ? error.path : undefined;
    return {
      exitCode: BAD_PATH_ERRNO.has(error.code) ? ExitCode.USAGE : ExitCode.FAILED,
      code: error.code,
      message: `${path ?? `${error.syscall} failed`}: ${describeFsError(error)}`,
    };
  }
  const code = errnoCode(error);
  if (code !== undefined && error instanceof Error) return { exitCode: ExitCode.FAILED, code, message: error.message };
  return { exitCode: ExitCode.FAILED, code: 'INTERNAL', message: error instanceof Error ? error.message : String(error) };
}

/**
 * Node's own errors from a system call. Other errors carry string codes too (an NBD
 * server's `EIO`): those are about the far end, never about a path the user gave.
 */
function isSystemError(error: unknown): error is Error & { code: string; syscall: string; path?: unknown } {
  return error instanceof Error && errnoCode(error) !== undefined && typeof (error as { syscall?: unknown }).syscall === 'string';
}

function firstLine(text: string): { line: string; more: number } {
  const lines = text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '');
  return { line: lines[0] ?? '', more: Math.max(0, lines.length - 1) };
}

/** What a command does, for messages that would otherwise not say what failed. */
export function operationOf(args: CommandArgs): string {
  switch (args.command) {
    case 'backup':
      return args.all === undefined ? `backup of domain '${args.domain}'` : `backup of the domains of ${args.all.uris.join(', ')}`;
    case 'prune':
      return `prune of ${args.dir}`;
    case 'restore':
      return `restore from ${args.dir}`;
    case 'verify':
      return `verify of ${args.dir}`;
    case 'list':
      return `list of ${args.dir}`;
    case 'run':
      return `run of ${args.name} from ${args.dir}`;
    case 'migrate-storage':
      return `storage migration of domain '${args.domain}'`;
    case 'export':
      return `export of disk ${args.disk} from ${args.dir}`;
  }
}

/** Message text stays on one line: scripts grep stderr, and log lines must not split. */
export function oneLine(message: string): string {
  return message.replace(/\s*\n\s*/g, ' ').trim();
}

export function debugEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return env['LIBVIRT_BACKUP_DEBUG'] === '1';
}
