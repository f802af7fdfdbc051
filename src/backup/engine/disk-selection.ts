// Which of a domain's disks a backup covers, and how: qcow2 disks take a bitmap
// and can be backed up incrementally; others (raw, ...) are copied whole at
// every level; cdroms, floppies and read-only disks hold no guest data to save.
import { diskBitmapSupport, type DomainSummary } from '../../xml/index.js';
import { BackupError } from './engine-types.js';

export interface SelectedDisk {
  target: string;
  /** The disk's image format (`qcow2`, `raw`, ...). */
  format: string;
  /** Can take a checkpoint bitmap, so incremental levels apply. */
  tracksChanges: boolean;
  /** Why it cannot, when it cannot. */
  fullCopyReason?: string;
}

export interface DiskSelection {
  disks: SelectedDisk[];
  /** Disks left out, each with why (said in the output). */
  skipped: Array<{ target: string; reason: string }>;
}

export function selectDisks(domain: DomainSummary, requested?: readonly string[]): DiskSelection {
  const selection: DiskSelection = { disks: [], skipped: [] };
  const known = new Set<string>();
  for (const disk of domain.disks) {
    const target = disk.target?.dev;
    if (target === undefined) continue;
    known.add(target);
    if (requested && requested.length > 0 && !requested.includes(target)) continue;
    const device = disk.device ?? 'disk';
    if (device === 'cdrom' || device === 'floppy') {
      selection.skipped.push({ target, reason: `${device} device` });
      continue;
    }
    if (disk.readonly) {
      selection.skipped.push({ target, reason: 'read-only disk' });
      continue;
    }
    if (disk.type === 'network' || disk.source === undefined) {
      selection.skipped.push({ target, reason: disk.type === 'network' ? 'network disk (not supported by this tool)' : 'no source' });
      continue;
    }
    const support = diskBitmapSupport(disk);
    selection.disks.push({
      target,
      format: disk.driver?.type ?? 'raw',
      tracksChanges: support.supported,
      ...(support.supported ? {} : { fullCopyReason: support.reason }),
    });
  }
  for (const wanted of requested ?? []) {
    if (!known.has(wanted)) {
      throw new BackupError('INVALID_ARGUMENT', `domain ${domain.name ?? ''} has no disk '${wanted}' (disks: ${[...known].join(', ') || 'none'})`);
    }
  }
  if (selection.disks.length === 0) {
    const why = selection.skipped.map((s) => `${s.target}: ${s.reason}`).join('; ');
    throw new BackupError('NO_DISKS', `nothing to back up on domain ${domain.name ?? ''}${why ? ` (${why})` : ''}`);
  }
  return selection;
}
