import type { BackupSet } from '../set/backup-set.js';
import type { BackupLevel, BackupTransport, DiskCompression, DiskRecord } from '../set/manifest.js';
import { formatBytes } from '../../common/format-bytes.js';

/** What `list` shows of a disk: its record without the checksum and source format. */
export type ListDisk = Pick<DiskRecord, 'target' | 'level' | 'file' | 'backingFile' | 'virtualSize' | 'fileSize' | 'dataBytes'> & {
  /** Bytes the file holds: less than `fileSize` for a compressed file, whose saved room is a hole. */
  storedBytes: number;
  /** How the backup compressed the file's clusters; null: stored plain. */
  compression: DiskCompression | null;
};

/** One restore point of a set. */
export interface ListRow {
  id: string;
  level: BackupLevel;
  transport: BackupTransport;
  parent: string | null;
  startedAt: string;
  completedAt: string;
  durationSeconds: number;
  checkpoint: string | null;
  mergedFrom: string[];
  /** The guest's file systems were frozen while the backup's job started; null: not recorded (written before it was). */
  quiesced: boolean | null;
  disks: ListDisk[];
  /** Sum over disks of the files' sizes. */
  fileSize: number;
  /** Sum over disks of the bytes the files hold (what the backup takes on disk). */
  storedBytes: number;
  /** Sum over disks of the data each backup copied. */
  dataBytes: number;
}

/** A set's domain, directory and restore points, as `listBackups()` returns them. */
export interface ListResult {
  domain: { name: string; uuid: string };
  dir: string;
  backups: ListRow[];
}

/** The restore points of a set, newest last, with what each needs to be restored. */
export function listBackups(set: BackupSet): ListResult {
  return {
    domain: { name: set.domain.name, uuid: set.domain.uuid },
    dir: set.dir,
    backups: set.backups.map((backup) => ({
      id: backup.id,
      level: backup.level,
      transport: backup.transport,
      parent: backup.parent,
      startedAt: backup.startedAt,
      completedAt: backup.completedAt,
      durationSeconds: Math.max(0, (Date.parse(backup.completedAt) - Date.parse(backup.startedAt)) / 1000),
      checkpoint: backup.checkpoint,
      mergedFrom: backup.mergedFrom ?? [],
      quiesced: backup.quiesced ?? null,
      disks: backup.disks.map(({ target, level, file, backingFile, virtualSize, fileSize, dataBytes, storedBytes, compression }) => ({
        target,
        level,
        file,
        backingFile,
        virtualSize,
        fileSize,
        dataBytes,
        storedBytes: storedBytes ?? fileSize,
        compression: compression ?? null,
      })),
      fileSize: backup.disks.reduce((sum, disk) => sum + disk.fileSize, 0),
      storedBytes: backup.disks.reduce((sum, disk) => sum + (disk.storedBytes ?? disk.fileSize), 0),
      dataBytes: backup.disks.reduce((sum, disk) => sum + disk.dataBytes, 0),
    })),
  };
}

/** Stable JSON for scripts (`list --json`). */
export function formatListJson(result: ListResult): string {
  return `${JSON.stringify(result, null, 2)}\n`;
}

/** `zstd`, `-` for plain files, `zstd,-` when only some disks were compressed. */
function compressionCell(disks: readonly ListDisk[]): string {
  return [...new Set(disks.map((disk) => disk.compression ?? '-'))].join(',');
}

/** A plain-text table, one backup per line, for terminals. */
export function formatListTable(result: ListResult): string {
  const header = ['ID', 'LEVEL', 'QUIESCED', 'PARENT', 'COMPLETED', 'CHECKPOINT', 'DISKS', 'COMPRESSED', 'DATA', 'STORED', 'SIZE'];
  const rows = result.backups.map((row) => [
    row.id,
    row.mergedFrom.length > 0 ? `${row.level}*` : row.level,
    row.quiesced === null ? '-' : row.quiesced ? 'yes' : 'no',
    row.parent ?? '-',
    row.completedAt.replace(/\.\d+/, ''),
    row.checkpoint ?? '-',
    row.disks.map((disk) => (disk.level === row.level ? disk.target : `${disk.target}(${disk.level})`)).join(','),
    compressionCell(row.disks),
    formatBytes(row.dataBytes),
    formatBytes(row.storedBytes),
    formatBytes(row.fileSize),
  ]);
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]!.length)));
  const rightAligned = new Set([header.indexOf('DATA'), header.indexOf('STORED'), header.indexOf('SIZE')]);
  const line = (cells: string[]): string =>
    cells
      .map((cell, column) => (rightAligned.has(column) ? cell.padStart(widths[column]!) : cell.padEnd(widths[column]!)))
      .join('  ')
      .trimEnd();
  const lines = [`${result.domain.name} (${result.domain.uuid}) in ${result.dir}`, line(header), ...rows.map(line)];
  if (result.backups.length === 0) lines.push('(no backups)');
  if (result.backups.some((row) => row.mergedFrom.length > 0)) lines.push('* holds data merged from pruned backups');
  return `${lines.join('\n')}\n`;
}
