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

/**
 * The server stayed silent longer than the client's `stallTimeout` while the client
 * waited for it (during the handshake, or with requests outstanding); the connection
 * has been closed.
 */
export class NbdTimeoutError extends Error {
  override name = 'NbdTimeoutError';
  readonly code = 'NBD_TIMEOUT';
}

/** The connection is gone (closed by either side, or a socket error). */
export class NbdConnectionError extends Error {
  override name = 'NbdConnectionError';
  readonly code = 'NBD_CONNECTION_CLOSED';
}

export { abortReason } from '../common/abort-reason.js';
