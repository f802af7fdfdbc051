import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect, type PeerCertificate, type TLSSocket } from 'node:tls';

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
}

/** Runs the TLS handshake over a socket that has just been acknowledged NBD_OPT_STARTTLS. */
export function upgradeToTls(socket: Duplex, options: NbdTlsOptions, defaultName: string): Promise<TLSSocket> {
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
