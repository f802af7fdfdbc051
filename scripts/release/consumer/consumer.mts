// A TypeScript user of all four entry points, compiled by pack-test.sh with the
// settings of a strict ESM project (tsconfig.json beside it).
import { connect, LibvirtError, type Connection, type Domain, DomainState } from 'libvirt-backup';
import { buildBackupXml, type BackupSpec, type CheckpointSpec } from 'libvirt-backup/xml';
import { NbdClient, type Extent } from 'libvirt-backup/nbd';
import { runBackup, type BackupOptions, type BackupResult } from 'libvirt-backup/backup';

export async function firstRunning(uri: string): Promise<Domain | undefined> {
  const conn: Connection = await connect(uri);
  for (const domain of await conn.listAllDomains()) {
    const { state } = await domain.getState();
    if (state === DomainState.RUNNING) return domain;
  }
  return undefined;
}

export function describe(error: unknown): string {
  return error instanceof LibvirtError ? `${error.codeName}: ${error.message}` : String(error);
}

export const pull: BackupSpec = { mode: 'pull', server: { transport: 'unix', socket: '/run/backup.sock' }, disks: [{ name: 'vda', backup: 'yes' }] };
export const checkpoint: CheckpointSpec = { name: 'nightly' };
export const xml: string = buildBackupXml(pull);

export async function dirty(client: NbdClient): Promise<Extent[]> {
  const extents: Extent[] = [];
  for await (const extent of client.extents('base:allocation')) extents.push(extent);
  return extents;
}

export async function nightly(options: BackupOptions): Promise<BackupResult> {
  return runBackup(options);
}
