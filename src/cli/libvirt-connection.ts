import type { Connection } from '../index.js';
import { LibvirtError } from '../index.js';
import { DEFAULT_URI } from './args.js';
import { CliError } from './error-report.js';
import { ExitCode } from './exit-codes.js';

/**
 * Opens the connection a command needs. libvirt's own words ("Cannot recv data", "Failed
 * to connect socket") do not say that connecting was the step that failed, nor to what.
 */
export async function openConnection(uri: string): Promise<Connection> {
  // Loaded here so that commands which never reach libvirt never load the addon.
  const { connect } = await import('../index.js');
  try {
    return await connect(uri);
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
    throw new CliError(error.codeName, ExitCode.FAILED, `cannot connect to ${uri}: ${error.message}`, { cause: error });
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
