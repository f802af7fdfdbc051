import type { BackupEstimate } from '../../backup/index.js';
import { formatBytes } from '../../common/format-bytes.js';

/** `backup --dry-run`'s lines: the level and why, then per disk its level and the bytes it would copy. */
export function formatEstimate(estimate: BackupEstimate, dest: string): string {
  const width = Math.max(...estimate.disks.map((disk) => disk.target.length));
  const amount = (bytes: number | null) => (bytes === null ? 'unknown' : formatBytes(bytes));
  return [
    `dry run: a backup of ${estimate.domain} into ${dest} would be ${estimate.level} (${estimate.reason}) and copy ${amount(estimate.totalBytes)}; nothing was created`,
    ...estimate.disks.map(
      (disk) =>
        `  ${disk.target.padEnd(width)}  ${disk.level.padEnd(4)}  ${amount(disk.bytes).padStart(10)}  ${disk.basis}${disk.note ? ` (${disk.note})` : ''}`,
    ),
  ].join('\n');
}
