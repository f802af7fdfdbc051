import { readFile } from 'node:fs/promises';

import { describeFsError } from '../common/fs-errors.js';
import type { ConnectFailureReason, ConnectOptions, Connection } from '../index.js';
import { LibvirtConnectError, LibvirtError } from '../index.js';
import { DEFAULT_URI, type ConnectionArgs } from './args.js';
import { CliError } from './error-report.js';
import { ExitCode } from './exit-codes.js';

/** What to do about each kind of connection failure, said after libvirt's words. */
const CONNECT_HINTS: Partial<Record<ConnectFailureReason, string>> = {
  'auth-failed': 'the server refused the credentials (--username, --password-file, or the SSH key)',
  'untrusted-server': "this host does not trust the server's certificate or SSH host key (the CA in /etc/pki/CA/cacert.pem, or known_hosts)",
  'client-credentials':
    "this host's TLS files are missing or unusable (/etc/pki/CA/cacert.pem, /etc/pki/libvirt/clientcert.pem, /etc/pki/libvirt/private/clientkey.pem, or pkipath=)",
  unreachable: 'nothing answers at that address and port (is libvirtd listening there, and the firewall open?)',
  timeout: 'no answer in time (--connect-timeout)',
};

/** The password in `--password-file`: its first line. The file's content never appears in a message. */
async function readPassword(path: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new CliError('INVALID_ARGUMENT', ExitCode.USAGE, `cannot read the password file ${path}: ${describeFsError(error)}`, { cause: error });
  }
  return text.split(/\r?\n/, 1)[0] ?? '';
}

async function connectOptions(access: Partial<Omit<ConnectionArgs, 'uri'>>): Promise<ConnectOptions> {
  const password = access.passwordFile === undefined ? undefined : await readPassword(access.passwordFile);
  const auth =
    access.username !== undefined || password !== undefined
      ? { ...(access.username !== undefined ? { username: access.username } : {}), ...(password !== undefined ? { password } : {}) }
      : undefined;
  return { ...(auth !== undefined ? { auth } : {}), ...(access.connectTimeoutMs !== undefined ? { timeoutMs: access.connectTimeoutMs } : {}) };
}

/**
 * Opens the connection a command needs. libvirt's own words ("Cannot recv data", "Failed
 * to connect socket") do not say that connecting was the step that failed, nor to what.
 * Credentials come from `access` (or libvirt's auth.conf); nothing is ever asked on the terminal.
 */
export async function openConnection(uri: string, access: Partial<Omit<ConnectionArgs, 'uri'>> = {}): Promise<Connection> {
  // Loaded here so that commands which never reach libvirt never load the addon.
  const { connect } = await import('../index.js');
  const options = await connectOptions(access);
  try {
    return await connect(uri, options);
  } catch (error) {
    if (!(error instanceof LibvirtError)) throw error;
    if (error.codeName === 'VIR_ERR_NO_CONNECT') {
      throw new CliError(
        error.codeName,
        ExitCode.USAGE,
        `cannot connect to ${uri}: no libvirt driver on this host accepts that URI (the default is ${DEFAULT_URI})`,
        { cause: error },
      );
    }
    const hint = error instanceof LibvirtConnectError ? CONNECT_HINTS[error.reason] : undefined;
    throw new CliError(error.codeName, ExitCode.FAILED, `cannot connect to ${uri}: ${error.message}${hint !== undefined ? `; ${hint}` : ''}`, { cause: error });
  }
}

/**
 * How long a command waits for its connection to close once its work is done: closing
 * ends the calls still in flight and says goodbye to the daemon, well under a second.
 */
export const CLOSE_WAIT_MS = 15_000;

/**
 * Closes a command's connection, bounded: the command's outcome is decided and
 * reported, and a close that does not end (a daemon that stopped answering) must not
 * keep the process from exiting with it. A close that fails changes nothing either.
 */
export async function closeConnection(connection: Pick<Connection, 'close'> | null | undefined, waitMs = CLOSE_WAIT_MS): Promise<void> {
  if (connection === null || connection === undefined) return;
  let timer: NodeJS.Timeout | undefined;
  const waited = new Promise<void>((resolveWait) => {
    timer = setTimeout(resolveWait, waitMs);
  });
  try {
    await Promise.race([connection.close().catch(() => undefined), waited]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Refuses a connection whose driver cannot take backups (libvirt's test driver, an old
 * libvirt, a hypervisor without backup support) before the set directory is touched.
 */
export async function assertBackupsPossible(connection: Connection, uri: string): Promise<void> {
  const support = await connection.getBackupSupport();
  if (support.backups && support.checkpoints) return;
  throw new CliError('UNSUPPORTED', ExitCode.USAGE, `${uri} cannot take backups: ${support.reason ?? 'libvirt reports no backup support'}`);
}
