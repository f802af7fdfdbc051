// Why a connection could not be opened. libvirt's codes do not tell the failures a
// remote caller must handle differently apart (a wrong password and an untrusted CA
// are both VIR_ERR_AUTH_FAILED; every failure of the ssh transport is
// VIR_ERR_SYSTEM_ERROR), so `reason` says which it was.
import { ErrorCode, ErrorDomain, ErrorLevel } from './constants.js';
import { LibvirtError } from './errors.js';
import { sshPortUnreachable, sshReasonLost } from './ssh-reachability.js';

/** Why `connect()` failed, as `LibvirtConnectError.reason`. */
export type ConnectFailureReason =
  /** The server refused the credentials (password, user, SSH key). */
  | 'auth-failed'
  /** This side does not trust the server: its certificate or host key is unknown or wrong. */
  | 'untrusted-server'
  /** This side's own TLS files are missing or unusable (CA, client certificate, key). */
  | 'client-credentials'
  /** Nothing answered at that address and port (refused, unreachable, unknown host). */
  | 'unreachable'
  /** The attempt took longer than `ConnectOptions.timeoutMs`. */
  | 'timeout'
  /** No libvirt driver on this host accepts the URI. */
  | 'no-driver'
  | 'other';

/** A connection that could not be opened: libvirt's error, and which kind of failure it was. */
export class LibvirtConnectError extends LibvirtError {
  readonly reason: ConnectFailureReason;
  /** The URI as the caller gave it. */
  readonly uri: string | null;

  constructor(error: LibvirtError, reason: ConnectFailureReason, uri: string | null) {
    super({
      code: error.code,
      domain: error.domain,
      level: error.level,
      message: error.message,
      operation: error.operation,
      str1: error.str1,
      str2: error.str2,
      str3: error.str3,
      int1: error.int1,
      int2: error.int2,
    });
    this.name = 'LibvirtConnectError';
    this.reason = reason;
    this.uri = uri;
    if (error.stack !== undefined) this.stack = error.stack.replace(/^LibvirtError/, 'LibvirtConnectError');
  }
}

const CLIENT_FILES = /our own certificate|cannot access|cannot read|unable to (?:read|load|import)|no such file|private key/i;
const SERVER_IDENTITY = /peer's certificate|server's certificate|certificate .*(?:hostname|verif|trust|issuer|expired|revoked)|host key|known_hosts/i;
const CREDENTIALS = /authentication failed|permission denied|auth(?:entication)? .*(?:refused|rejected|cancel)|failed to collect auth credentials|password/i;
const UNREACHABLE =
  /connection refused|no route to host|network is unreachable|unable to connect to server|connect to host|name or service not known|could not resolve|temporary failure in name resolution|host is down|connection timed out/i;

/** Sorts a failure of virConnectOpenAuth by what the caller can do about it. */
export function connectFailureReason(error: LibvirtError): ConnectFailureReason {
  if (error.code === ErrorCode.VIR_ERR_OPERATION_TIMEOUT) return 'timeout';
  if (error.code === ErrorCode.VIR_ERR_NO_CONNECT) return 'no-driver';
  const message = error.message;
  // The server's identity first: libvirt reports an untrusted server certificate as an
  // authentication failure.
  if (SERVER_IDENTITY.test(message) && !/our own certificate/i.test(message)) return 'untrusted-server';
  if (CLIENT_FILES.test(message) && /certificate|\.pem|key/i.test(message)) return 'client-credentials';
  if (
    error.code === ErrorCode.VIR_ERR_AUTH_FAILED ||
    error.code === ErrorCode.VIR_ERR_AUTH_CANCELLED ||
    error.code === ErrorCode.VIR_ERR_AUTH_UNAVAILABLE ||
    CREDENTIALS.test(message)
  ) {
    return 'auth-failed';
  }
  if (UNREACHABLE.test(message)) return 'unreachable';
  return 'other';
}

/**
 * `connectFailureReason()`, and where libvirt's message lost the reason (the ssh
 * transport's broken pipe), what trying the address itself finds.
 */
export async function connectFailureReasonAt(error: LibvirtError, uri: string | null): Promise<ConnectFailureReason> {
  const reason = connectFailureReason(error);
  if (reason === 'other' && uri !== null && sshReasonLost(uri, error.message) && (await sshPortUnreachable(uri))) return 'unreachable';
  return reason;
}

export function connectTimeoutError(uri: string | null, timeoutMs: number): LibvirtConnectError {
  const error = new LibvirtError({
    code: ErrorCode.VIR_ERR_OPERATION_TIMEOUT,
    domain: ErrorDomain.VIR_FROM_RPC,
    level: ErrorLevel.ERROR,
    message: `connecting to ${uri ?? "libvirt's default URI"} did not finish within ${timeoutMs} ms (virConnectOpenAuth)`,
    operation: 'virConnectOpenAuth',
    str1: null,
    str2: null,
    str3: null,
    int1: 0,
    int2: 0,
  });
  return new LibvirtConnectError(error, 'timeout', uri);
}
