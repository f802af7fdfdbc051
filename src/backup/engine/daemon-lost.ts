// A libvirtd that goes away makes every later call fail with whatever libvirt says about
// its broken socket ("End of file while reading data", "Cannot recv data"). Read in the
// middle of a check (is the bitmap intact? are backups supported?), such a failure would
// pass for an answer to the check; it must be reported as the lost daemon it is.
import type { Connection } from '../../libvirt/connection.js';
import { BackupSetError } from '../errors.js';
import { BackupError } from './engine-types.js';

/** True when the connection to libvirtd is gone (a closed connection counts as gone). */
export async function daemonLost(conn: Connection): Promise<boolean> {
  return !(await conn.isAlive().catch(() => false));
}

/**
 * `error` as the run's caller should see it: a failure while the daemon is gone is
 * DAEMON_LOST, unless it already says something more precise (a file problem, an abort,
 * an earlier explanation of the same loss).
 */
export async function asDaemonLost(conn: Connection, domainName: string, error: unknown): Promise<unknown> {
  if (error instanceof BackupSetError) return error;
  if (error instanceof BackupError && (error.code === 'DAEMON_LOST' || error.code === 'ABORTED')) return error;
  if (!(await daemonLost(conn))) return error;
  const said = error instanceof Error ? error.message : String(error);
  return new BackupError('DAEMON_LOST', `lost the connection to libvirtd during backup of ${domainName} (${said}); nothing was kept from it`, {
    cause: error,
  });
}
