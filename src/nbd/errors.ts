import { errnoName } from './protocol.js';

/** The server answered a request with an error; the connection stays usable. */
export class NbdError extends Error {
  override name = 'NbdError';
  /** NBD errno name, e.g. `EIO`, `ENOSPC`, `EINVAL`. */
  readonly code: string;
  readonly errno: number;
  /** Command that failed, e.g. `NBD_CMD_READ`. */
  readonly command: string;
  /** Offset the server blamed, when it sent `NBD_REPLY_TYPE_ERROR_OFFSET`. */
  readonly offset: number | undefined;

  constructor(errno: number, command: string, serverMessage = '', offset?: number) {
    const code = errnoName(errno);
    const where = offset === undefined ? '' : ` at offset ${offset}`;
    super(`${command} failed: ${code}${where}${serverMessage ? `: ${serverMessage}` : ''}`);
    this.code = code;
    this.errno = errno;
    this.command = command;
    this.offset = offset;
  }
}

/** The server refused an option during the handshake (unknown export, TLS required...). */
export class NbdOptionError extends Error {
  override name = 'NbdOptionError';
  /** Reply name, e.g. `NBD_REP_ERR_UNKNOWN`. */
  readonly code: string;
  readonly option: string;

  constructor(option: string, code: string, serverMessage = '') {
    super(`${option} refused by the server: ${code}${serverMessage ? `: ${serverMessage}` : ''}`);
    this.code = code;
    this.option = option;
  }
}

/** The server broke the protocol; the connection has been closed. */
export class NbdProtocolError extends Error {
  override name = 'NbdProtocolError';
  readonly code = 'NBD_PROTOCOL_ERROR';
}

/** The connection is gone (closed by either side, or a socket error). */
export class NbdConnectionError extends Error {
  override name = 'NbdConnectionError';
  readonly code = 'NBD_CONNECTION_CLOSED';
}

export function abortReason(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  if (reason instanceof Error) return reason;
  const error = new Error(reason === undefined ? 'The operation was aborted' : String(reason));
  error.name = 'AbortError';
  return error;
}
