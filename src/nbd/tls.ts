import { isIP, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect, type PeerCertificate } from 'node:tls';
import { NbdProtocolError } from './errors.js';
import type { SlabPool } from './slabs.js';
import { socketOnDescriptor } from './transport.js';

/** TLS for an NBD connection: the CA, the client certificate and key, and how the server is checked. */
export interface NbdTlsOptions {
  /** CA certificate(s) the server's certificate must chain to (PEM). */
  ca?: string | Buffer | Array<string | Buffer>;
  /** Client certificate (PEM), for servers that verify clients. */
  cert?: string | Buffer;
  /** Client private key (PEM). */
  key?: string | Buffer;
  /** Name the server certificate must carry; defaults to the TCP host, or `localhost`. */
  servername?: string;
  /** Defaults to true; turning it off accepts any server. */
  rejectUnauthorized?: boolean;
  /** Replaces the check of the server's certificate against its host name; return an error to refuse it. */
  checkServerIdentity?: (hostname: string, cert: PeerCertificate) => Error | undefined;
  /**
   * Runs TLS outside Node's TLS, for example `tlsRelay` of `libvirt-backup` (GnuTLS on
   * threads of its own, which takes the decryption off the JS thread). Used for TCP
   * and unix sockets unless `checkServerIdentity` is set, which needs Node's TLS.
   */
  relay?: NbdTlsRelay;
}

/** What a relay needs to run a connection's TLS handshake itself. */
export interface TlsRelayRequest {
  /** CA certificates (PEM, concatenated); absent: the system's trusted CAs. */
  ca?: string;
  cert?: string | Buffer;
  key?: string | Buffer;
  /** Name (DNS name or IP address) the server's certificate must carry, when `verify`. */
  verifyName: string;
  /** Server Name Indication; absent for an IP address. */
  serverName?: string;
  /** Check the server's certificate (chain and name); false accepts any. */
  verify: boolean;
  /** Longest the handshake may take, in milliseconds (0: no limit). */
  timeoutMs: number;
}

/**
 * Takes over the TLS of a connected socket whose NBD_OPT_STARTTLS was just
 * acknowledged: it duplicates `fd` before returning (the caller reads from it no
 * more), runs the handshake, and resolves with the descriptor of a local stream
 * socket over which the rest of the connection goes as plain text. Aborting
 * `signal` ends a handshake still running.
 */
export type NbdTlsRelay = (fd: number, request: TlsRelayRequest, signal?: AbortSignal) => Promise<number>;

/** How long a relayed handshake may take when the caller set no bound. */
const RELAY_HANDSHAKE_TIMEOUT_MS = 60_000;

function pemText(value: string | Buffer | Array<string | Buffer> | undefined): string | undefined {
  if (value === undefined) return undefined;
  const parts = Array.isArray(value) ? value : [value];
  return parts.map((part) => (typeof part === 'string' ? part : part.toString('latin1'))).join('\n');
}

interface SocketHandle {
  fd?: number;
  readStop?: () => number;
}

/** The handle under a Node socket, if it has a descriptor a relay can take over. */
function relayableHandle(socket: Duplex): (SocketHandle & { fd: number }) | undefined {
  const handle = (socket as { _handle?: SocketHandle | null })._handle;
  return typeof handle?.fd === 'number' && handle.fd >= 0 ? (handle as SocketHandle & { fd: number }) : undefined;
}

/** Where a connection's TLS runs, and what its plain side may use. */
export interface TlsUpgradeContext {
  /** Receive memory for a relayed connection's plain socket. */
  slabs?: SlabPool | undefined;
  /** Ends the handshake (the caller's bound on the whole negotiation). */
  signal?: AbortSignal | undefined;
}

/** Runs the TLS handshake over a socket that has just been acknowledged NBD_OPT_STARTTLS. */
export function upgradeToTls(socket: Duplex, options: NbdTlsOptions, defaultName: string, context: TlsUpgradeContext = {}): Promise<Duplex> {
  const handle = options.relay && !options.checkServerIdentity ? relayableHandle(socket) : undefined;
  if (options.relay && handle) return relayTls(socket as Socket, handle, options.relay, options, defaultName, context);
  return nodeTls(socket, options, defaultName);
}

async function relayTls(
  socket: Socket,
  handle: SocketHandle & { fd: number },
  relay: NbdTlsRelay,
  options: NbdTlsOptions,
  defaultName: string,
  context: TlsUpgradeContext,
): Promise<Duplex> {
  // Nothing may be read from the descriptor once the relay has it.
  handle.readStop?.();
  // The TCP socket carries nothing itself from now on: an error it reports (an abort
  // destroying it) reaches the caller through the relay's own failure.
  socket.on('error', () => {});
  if (socket.readableLength > 0) throw new NbdProtocolError('the server sent data before the TLS handshake');
  const name = options.servername ?? defaultName;
  const ca = pemText(options.ca);
  const request: TlsRelayRequest = {
    ...(ca !== undefined ? { ca } : {}),
    ...(options.cert !== undefined ? { cert: options.cert } : {}),
    ...(options.key !== undefined ? { key: options.key } : {}),
    verifyName: name,
    ...(isIP(name) ? {} : { serverName: name }),
    verify: options.rejectUnauthorized ?? true,
    timeoutMs: RELAY_HANDSHAKE_TIMEOUT_MS,
  };
  const plainFd = await relay(handle.fd, request, context.signal);
  const plain = socketOnDescriptor(plainFd, context.slabs);
  // The TCP socket stays open but idle under the relay's own descriptor: destroying
  // it (as an aborted handshake does) ends the plain side too, and the other way round.
  socket.once('close', () => plain.destroy());
  plain.once('close', () => socket.destroy());
  if (socket.destroyed) plain.destroy();
  return plain;
}

function nodeTls(socket: Duplex, options: NbdTlsOptions, defaultName: string): Promise<Duplex> {
  const name = options.servername ?? defaultName;
  return new Promise((resolve, reject) => {
    const secure = tlsConnect({
      socket,
      host: name,
      // SNI must be a DNS name; an address is still checked against the certificate's IP SANs.
      ...(isIP(name) ? {} : { servername: name }),
      ...(options.ca !== undefined ? { ca: options.ca } : {}),
      ...(options.cert !== undefined ? { cert: options.cert } : {}),
      ...(options.key !== undefined ? { key: options.key } : {}),
      rejectUnauthorized: options.rejectUnauthorized ?? true,
      ...(options.checkServerIdentity ? { checkServerIdentity: options.checkServerIdentity } : {}),
    });
    const onError = (error: Error): void => {
      secure.destroy();
      socket.destroy();
      reject(error);
    };
    const onClose = (): void => onError(new Error('the server closed the connection during the TLS handshake'));
    secure.once('error', onError);
    socket.once('close', onClose);
    secure.once('secureConnect', () => {
      secure.off('error', onError);
      socket.off('close', onClose);
      resolve(secure);
    });
  });
}
