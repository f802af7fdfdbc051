/**
 * Exit codes of `libvirt-backup`; scripts rely on them, so they are part of the interface
 * and `--help` prints this table.
 */
export const ExitCode = {
  /** The command did what was asked. */
  OK: 0,
  /** The operation was attempted and failed (libvirt job, qemu-img, I/O, a locked set). */
  FAILED: 1,
  /** Usage error or bad input: nothing was attempted and nothing in the set changed. */
  USAGE: 2,
  /** `verify` found problems in the set, or a command refused a damaged file (its checksum no longer matches). */
  PROBLEMS_FOUND: 3,
  /** Interrupted by SIGINT (128 + 2); what the command had begun to write was removed. */
  INTERRUPTED: 130,
  /** Stopped by SIGTERM (128 + 15); the same cleanup as SIGINT. */
  TERMINATED: 143,
} as const;

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

export function exitCodeForSignal(signal: NodeJS.Signals): number {
  return signal === 'SIGTERM' ? ExitCode.TERMINATED : ExitCode.INTERRUPTED;
}

export const EXIT_CODES_HELP = `Exit codes:
  0    success
  1    the operation failed (libvirt job, qemu-img, I/O error, set locked by another run)
  2    usage error or bad input (unknown domain, unwritable destination, corrupt manifest,
       set of another domain, missing backing file, a URI that cannot take backups...);
       nothing in the set changed
  3    damage found: verify found problems (they are listed), or backup, restore or
       prune refused a file whose checksum no longer matches (CHECKSUM_MISMATCH)
  130  interrupted by SIGINT: backup and prune remove the partial files of the run and
       leave the manifest unchanged, restore removes its partial output, verify and
       list change nothing
  143  stopped by SIGTERM; same as 130`;
