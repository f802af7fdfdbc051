// What a libvirt connection URI says about where the hypervisor is:
// driver[+transport]://[user@][host][:port]/path[?query] (libvirt's uri.html).

export interface LibvirtUri {
  /** `qemu`, `test`, ... */
  driver: string;
  /** `tls`, `tcp`, `ssh`, `libssh`, `libssh2`, `unix`, `ext`; undefined when not written. */
  transport: string | undefined;
  user: string | undefined;
  /** Without brackets for IPv6 addresses; undefined for a local URI. */
  host: string | undefined;
  port: number | undefined;
  path: string;
  /** Query parameters in order (`pkipath`, `keyfile`, `no_tty`, ...). */
  params: Map<string, string>;
}

const URI = /^([A-Za-z][A-Za-z0-9]*)(?:\+([A-Za-z0-9]+))?:\/\/([^/?#]*)([^?#]*)(?:\?([^#]*))?$/;

/** Parses a libvirt URI; undefined for anything that is not one (libvirt then says why). */
export function parseLibvirtUri(uri: string): LibvirtUri | undefined {
  const match = URI.exec(uri);
  if (!match) return undefined;
  const [, driver, transport, authority, path, query] = match as unknown as [string, string, string | undefined, string, string, string | undefined];
  const at = authority.lastIndexOf('@');
  const user = at >= 0 ? decodeURIComponent(authority.slice(0, at)) : undefined;
  const hostPort = at >= 0 ? authority.slice(at + 1) : authority;
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(hostPort);
  const plain = /^([^:]*)(?::(\d+))?$/.exec(hostPort);
  const host = bracketed?.[1] ?? plain?.[1] ?? hostPort;
  const port = bracketed?.[2] ?? plain?.[2];
  const params = new Map<string, string>();
  for (const pair of (query ?? '').split('&')) {
    if (pair === '') continue;
    const equals = pair.indexOf('=');
    const key = decodeURIComponent(equals >= 0 ? pair.slice(0, equals) : pair);
    params.set(key, decodeURIComponent(equals >= 0 ? pair.slice(equals + 1) : ''));
  }
  return {
    driver: driver.toLowerCase(),
    transport: transport?.toLowerCase(),
    user,
    host: host === '' ? undefined : host,
    port: port === undefined ? undefined : Number(port),
    path: path === '' ? '/' : path,
    params,
  };
}

const NETWORK_TRANSPORTS = new Set(['tls', 'tcp', 'ssh', 'libssh', 'libssh2', 'ext']);

/**
 * Whether the URI reaches libvirtd through the network (a remote transport, or a host
 * name, which means TLS), so that the hypervisor's files, sockets and address may not
 * be this host's, even when the host is this one.
 */
export function isRemoteUri(uri: LibvirtUri): boolean {
  if (uri.transport === 'unix') return false;
  return (uri.transport !== undefined && NETWORK_TRANSPORTS.has(uri.transport)) || uri.host !== undefined;
}
