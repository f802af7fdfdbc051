// A `backup-<disk>` bitmap QEMU keeps after libvirt lost the job it was made for.
import type { Domain } from '../../libvirt/domain.js';
import type { BackupSpec, CheckpointSpec } from '../../xml/index.js';
import { LibvirtError } from '../../libvirt/errors.js';
import type { BackupEvent } from './engine-types.js';
import { parseDomainXml } from '../../xml/index.js';
import { QemuMonitor, type QemuJob, type QemuNode } from './qemu-monitor.js';

const BITMAP_EXISTS = /Bitmap already exists: (backup-[^\s'",]+)/;

/**
 * `virDomainBackupBegin`, once more after removing the stale bitmaps when QEMU refused
 * the job's transaction because a `backup-<disk>` bitmap is left from a job libvirt
 * lost (libvirtd killed while it started or ended one, then started again: it drops
 * the job and never the bitmap, and every incremental or differential backup of the
 * domain fails until QEMU restarts). Removed only while QEMU runs no backup job, and
 * only the non-persistent ones libvirt makes for a job, never a checkpoint's.
 */
export async function backupBeginPastStaleBitmaps(
  domain: Domain,
  spec: BackupSpec,
  checkpoint: CheckpointSpec,
  emit: (event: BackupEvent) => void,
): Promise<void> {
  try {
    await domain.backupBegin(spec, checkpoint);
    return;
  } catch (error) {
    const stale = error instanceof LibvirtError ? BITMAP_EXISTS.exec(error.message)?.[1] : undefined;
    if (stale === undefined) throw error;
    const qemu = new QemuMonitor(domain);
    const jobs = (await qemu.command('query-jobs')) as QemuJob[];
    if (jobs.some((job) => job.type === 'backup')) throw error;
    const removed = await removeBackupBitmaps(qemu, domain);
    if (!removed.includes(stale)) throw error;
    emit({
      type: 'notice',
      message:
        `removed the bitmap${removed.length === 1 ? '' : 's'} ${removed.join(', ')} that QEMU kept from a backup job libvirt no longer knows ` +
        `(libvirt refused the job: "Bitmap already exists: ${stale}"); libvirt marks the domain as tainted (custom-monitor) for this`,
    });
  }
  await domain.backupBegin(spec, checkpoint);
}

/**
 * Removes the bitmaps libvirt builds for a job's incremental part: `backup-<disk>`, and
 * never persistent (a checkpoint's bitmap always is, whatever its name). Returns their names.
 */
export async function removeBackupBitmaps(qemu: QemuMonitor, domain: Domain): Promise<string[]> {
  const names = new Set(
    parseDomainXml(await domain.getXMLDesc()).disks.flatMap((disk) => (disk.target?.dev === undefined ? [] : [`backup-${disk.target.dev}`])),
  );
  const nodes = (await qemu.command('query-named-block-nodes', { flat: true })) as QemuNode[];
  const removed: string[] = [];
  for (const node of nodes) {
    for (const bitmap of node['dirty-bitmaps'] ?? []) {
      if (bitmap.name !== undefined && bitmap.persistent !== true && names.has(bitmap.name)) {
        await qemu.command('block-dirty-bitmap-remove', { node: node['node-name'], name: bitmap.name });
        removed.push(bitmap.name);
      }
    }
  }
  return removed;
}
