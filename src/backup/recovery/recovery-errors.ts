/** Why running from a backup, moving a recovered domain's storage or exporting a point failed. */
export type RecoveryErrorCode =
  /** A domain of the name asked for exists already. */
  | 'DOMAIN_EXISTS'
  /** The domain named is not there, or not running where it must be. */
  | 'DOMAIN_NOT_FOUND'
  | 'DOMAIN_NOT_RUNNING'
  /** An overlay, a destination or a socket is already there. */
  | 'OUTPUT_EXISTS'
  /** Options that make no sense together, or a name libvirt cannot take. */
  | 'INVALID_ARGUMENT'
  /** A block copy failed or was cancelled by someone else; the domain still runs where it was. */
  | 'COPY_FAILED'
  /** qemu-nbd did not start or stopped serving. */
  | 'EXPORT_FAILED'
  | 'ABORTED';

/** Running a domain from a backup, moving its storage or exporting a point failed; `code` says why. */
export class RecoveryError extends Error {
  override name = 'RecoveryError';

  constructor(
    readonly code: RecoveryErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Whether `error` is a `RecoveryError`, with the given code when one is given. */
export function isRecoveryError(error: unknown, code?: RecoveryErrorCode): error is RecoveryError {
  return error instanceof RecoveryError && (code === undefined || error.code === code);
}
