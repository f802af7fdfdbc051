// Pull backups from a hypervisor on another host: its NBD server listens on TCP (TLS by
// default) at an address this host can reach, on a port from a configured range, and our
// NBD client presents libvirt's client certificate. Nothing of the hypervisor's file
// system is opened here: its scratch files are only named, next to the disks' images.
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, posix } from 'node:path';

import { describeFsError } from '../../common/fs-errors.js';
import { LibvirtError } from '../../libvirt/errors.js';
import { isRemoteUri, parseLibvirtUri, type LibvirtUri } from '../../libvirt/uri.js';
import type { NbdTlsOptions } from '../../nbd/index.js';
import type { DomainSummary, TcpBackupServer } from '../../xml/index.js';
import { BackupError, type BackupOptions, type RemoteOptions } from './engine-types.js';
import { tlsRelay } from './tls-relay.js';

/** NBD's registered port and the 190 above it. */
export const DEFAULT_NBD_PORTS = { first: 10809, last: 10999 } as const;

/** How a pull job on a remote hypervisor is exported, and how we read it. */
export interface RemoteExport {
  /** The URI as libvirt reports it. */
  uri: string;
  /** Where the NBD server listens (on the hypervisor) and where we connect. */
  host: string;
  ports: { first: number; last: number };
  /** Our side of the TLS handshake; null: the export is plain text (`tls: false`). */
  tls: NbdTlsOptions | null;
}

/** The TCP address of a job's export, once libvirt accepted a port. */
export interface TcpExport {
  host: string;
  port: number;
  tls: NbdTlsOptions | null;
}

export interface ClientPkiFiles {
  ca: string;
  cert: string;
  key: string;
}

/**
 * libvirt's client PKI layout: `tlsDir` (or the URI's `pkipath`) holds cacert.pem,
 * clientcert.pem and clientkey.pem; otherwise root uses /etc/pki and other users
 * ~/.pki/libvirt, as libvirt itself does.
 */
export function clientPkiFiles(tlsDir: string | undefined, uri: LibvirtUri | undefined): ClientPkiFiles {
  const dir = tlsDir ?? uri?.params.get('pkipath');
  if (dir !== undefined && dir !== '') {
    return { ca: join(dir, 'cacert.pem'), cert: join(dir, 'clientcert.pem'), key: join(dir, 'clientkey.pem') };
  }
  if ((process.getuid?.() ?? 0) === 0) {
    return { ca: '/etc/pki/CA/cacert.pem', cert: '/etc/pki/libvirt/clientcert.pem', key: '/etc/pki/libvirt/private/clientkey.pem' };
  }
  const home = join(homedir(), '.pki/libvirt');
  return { ca: join(home, 'cacert.pem'), cert: join(home, 'clientcert.pem'), key: join(home, 'clientkey.pem') };
}

async function readPki(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (error) {
    throw new BackupError(
      'INVALID_ARGUMENT',
      `cannot read the ${what} for NBD over TLS, ${path}: ${describeFsError(error)} (set the directory with --tls-dir, or turn TLS off with --nbd-tls no)`,
      { cause: error },
    );
  }
}

function checkPorts(ports: unknown): { first: number; last: number } {
  const range = ports as { first?: unknown; last?: unknown } | undefined;
  const valid = (value: unknown): value is number => Number.isInteger(value) && (value as number) >= 1 && (value as number) <= 65535;
  if (typeof range !== 'object' || range === null || !valid(range.first) || !valid(range.last) || range.first > range.last) {
    throw new BackupError('INVALID_ARGUMENT', 'remote.nbdPorts must be { first, last } with 1 <= first <= last <= 65535');
  }
  return { first: range.first, last: range.last };
}

/**
 * What a pull job on `uri` needs to be read from here, or null when `uri` is local (the
 * export is then a unix socket in this host's run directory). Certificates are read now,
 * so that a missing one is reported before any job starts.
 */
export async function planRemoteExport(uri: string, options: RemoteOptions = {}): Promise<RemoteExport | null> {
  const parsed = parseLibvirtUri(uri);
  if (parsed === undefined || !isRemoteUri(parsed)) return null;
  if (options.nbdHost !== undefined && (typeof options.nbdHost !== 'string' || options.nbdHost === '')) {
    throw new BackupError('INVALID_ARGUMENT', 'remote.nbdHost must be a host name or address');
  }
  const host = options.nbdHost ?? parsed.host;
  if (host === undefined) {
    throw new BackupError('INVALID_ARGUMENT', `${uri} names no host: say where the hypervisor's NBD server should listen (--nbd-host)`);
  }
  const ports = options.nbdPorts === undefined ? { ...DEFAULT_NBD_PORTS } : checkPorts(options.nbdPorts);
  if (options.tls === false) return { uri, host, ports, tls: null };
  const files = clientPkiFiles(options.tlsDir, parsed);
  const [ca, cert, key] = await Promise.all([readPki(files.ca, 'CA certificate'), readPki(files.cert, 'client certificate'), readPki(files.key, 'client key')]);
  // The decryption runs beside the JS thread, which then only copies and writes.
  return { uri, host, ports, tls: { ca, cert, key, relay: tlsRelay } };
}

export function tcpServer(remote: RemoteExport, port: number): TcpBackupServer {
  return { transport: 'tcp', name: remote.host, port, tls: remote.tls === null ? 'no' : 'yes' };
}

/** QEMU could not listen on the port: someone else has it. */
function portTaken(error: unknown): boolean {
  return error instanceof LibvirtError && /address already in use|EADDRINUSE|failed to bind socket/i.test(error.message);
}

/**
 * Starts the job with its NBD server on the first port of the range that QEMU can
 * listen on, trying them from a random place in the range (so that runs against one
 * hypervisor rarely try the same port). `record` is told each port before it is tried:
 * a run that dies then still tells the next one which job is its own.
 */
export async function beginOnFreePort(
  remote: RemoteExport,
  begin: (server: TcpBackupServer) => Promise<void>,
  record: (server: TcpBackupServer) => Promise<void>,
): Promise<TcpExport> {
  const { first, last } = remote.ports;
  const count = last - first + 1;
  const offset = Math.floor(Math.random() * count);
  for (let tried = 0; tried < count; tried++) {
    const port = first + ((offset + tried) % count);
    const server = tcpServer(remote, port);
    await record(server);
    try {
      await begin(server);
      return { host: remote.host, port, tls: remote.tls };
    } catch (error) {
      if (!portTaken(error)) throw error;
    }
  }
  throw new BackupError('JOB_FAILED', `the hypervisor has no free port for the backup's NBD server in ${first}-${last} (--nbd-ports)`);
}

export function describeTcpExport(endpoint: TcpExport): string {
  return `${endpoint.host.includes(':') ? `[${endpoint.host}]` : endpoint.host}:${endpoint.port}${endpoint.tls === null ? '' : ' (TLS)'}`;
}

/** `host:port` as the domain lock records it and a job's XML shows it. */
export function serverAddress(server: { name: string; port?: number | undefined }): string {
  return `${server.name}:${server.port ?? ''}`;
}

/**
 * What a run on `uri` needs for its hypervisor: null when it is this host, or for a push
 * into storage declared shared (both sides see `dest` at the same path). A push on a
 * remote hypervisor is refused otherwise: libvirt would write the files on its disks.
 */
export async function planRemoteRun(
  uri: string,
  transport: 'pull' | 'push',
  options: Pick<BackupOptions, 'dest' | 'remote' | 'destShared' | 'scratchDir'>,
): Promise<RemoteExport | null> {
  const parsed = parseLibvirtUri(uri);
  if (parsed === undefined || !isRemoteUri(parsed)) return null;
  if (transport === 'push') {
    if (options.destShared === true) return null;
    throw new BackupError(
      'INVALID_ARGUMENT',
      `a push backup on ${uri} would have the hypervisor write the backup files to ${options.dest} on its own file system; use a pull backup (the default), or declare the destination shared storage that the hypervisor sees at the same path (--dest-shared)`,
    );
  }
  if (options.scratchDir !== undefined) {
    throw new BackupError(
      'INVALID_ARGUMENT',
      `scratchDir: on a remote hypervisor (${uri}) libvirt keeps the pull job's scratch files next to the disks, on its side`,
    );
  }
  return planRemoteExport(uri, options.remote);
}

/**
 * A pull job's scratch file on a remote hypervisor: next to the disk's image, in a
 * directory its QEMU can write (a path on that host, never opened here). libvirt
 * creates it when the job starts and removes it when the job ends.
 */
export function remoteScratchPath(summary: DomainSummary, target: string, name: string): string {
  const disk = summary.disks.find((candidate) => candidate.target?.dev === target);
  const file = disk?.type === 'file' || disk?.type === undefined ? disk?.source?.file : undefined;
  if (file === undefined || !posix.isAbsolute(file)) {
    throw new BackupError(
      'UNSUPPORTED',
      `disk ${target} is not an image file (type ${disk?.type ?? 'unknown'}): a pull backup on a remote hypervisor keeps its scratch file next to the image`,
    );
  }
  return posix.join(posix.dirname(file), name);
}
