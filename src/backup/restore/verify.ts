import { readdir, stat } from 'node:fs/promises';
import type { BackupSet } from '../set/backup-set.js';
import { fileChecksumMatches } from '../checksum.js';
import { throwIfAborted, isBackupSetError } from '../errors.js';
import { describeFsError, errnoCode } from '../../common/fs-errors.js';
import { MANIFEST_FILE } from '../set/manifest.js';
import { qemuImgCheck, qemuImgInfo, summariseQemuImgOutput } from '../qcow2/qemu-img.js';
import { PENDING_CHECKPOINTS_FILE, readPendingCheckpoints } from '../set/pending-checkpoints.js';
import { JOURNAL_FILE } from '../set/run-journal.js';

/** What kind of problem a `VerifyProblem` is. */
export type VerifyProblemKind =
  | 'missing'
  | 'size-mismatch'
  | 'checksum-mismatch'
  | 'image-corrupt'
  | 'not-qcow2'
  | 'backing-mismatch'
  | 'backing-missing'
  | 'virtual-size-mismatch'
  | 'orphan-file'
  | 'interrupted-run'
  | 'pending-checkpoints';

/** Something `verify()` found wrong with a set, a file or a restore point. */
export interface VerifyProblem {
  /** Errors make the set (or some restore points) unreliable; warnings do not. */
  severity: 'error' | 'warning';
  kind: VerifyProblemKind;
  /** The file the problem is about (basename in the set directory). */
  file: string;
  backupId?: string;
  target?: string;
  /** One line; a long qemu-img report is cut to its first line there and kept whole in `detail`. */
  message: string;
  /** Everything qemu-img printed about the file, when `message` only has its first line. */
  detail?: string;
}

/** One backup file as `verify()` found it. */
export interface VerifiedFile {
  backupId: string;
  target: string;
  file: string;
  ok: boolean;
}

/** The outcome of `verify()`: whether the set is sound, every file checked, and the problems found. */
export interface VerifyReport {
  ok: boolean;
  files: VerifiedFile[];
  problems: VerifyProblem[];
}

/** What `verify()` checks, and how it reports progress. */
export interface VerifyOptions {
  /** Re-read every file and compare its checksum (default true; false checks structure only). */
  checksums?: boolean;
  signal?: AbortSignal;
  /** Called per file, and as its bytes are hashed. */
  onProgress?: (progress: { file: string; index: number; total: number; bytesHashed?: number }) => void;
}

/**
 * Re-reads the set and compares it with the manifest: each file's presence, size, checksum,
 * qcow2 consistency and backing pointer; plus files in the directory that the manifest does
 * not name. Reads only; never changes the set.
 */
export async function verify(set: BackupSet, options: VerifyOptions = {}): Promise<VerifyReport> {
  const problems: VerifyProblem[] = [];
  const files: VerifiedFile[] = [];
  const total = set.backups.reduce((sum, backup) => sum + backup.disks.length, 0);
  let index = 0;
  const present = new Set<string>();

  for (const backup of set.backups) {
    for (const disk of backup.disks) {
      throwIfAborted(options.signal);
      options.onProgress?.({ file: disk.file, index, total });
      index += 1;
      const found: VerifyProblem[] = [];
      const report: ProblemSink = (severity, kind, message, detail) => {
        found.push({
          severity,
          kind,
          file: disk.file,
          backupId: backup.id,
          target: disk.target,
          message: `${disk.file}: ${message}`,
          ...(detail === undefined ? {} : { detail }),
        });
      };
      const path = set.pathOf(disk.file);
      let size: number | undefined;
      try {
        size = (await stat(path)).size;
        present.add(disk.file);
      } catch (error) {
        report(
          'error',
          'missing',
          errnoCode(error) === 'ENOENT' ? `missing (backup ${backup.id}, disk ${disk.target})` : `cannot be read: ${describeFsError(error)}`,
        );
      }
      if (size !== undefined) {
        // Said first and plainly: a short file explains the checksum and qemu-img errors after it.
        if (size < disk.fileSize) report('error', 'size-mismatch', `truncated: size is ${size} bytes, the manifest says ${disk.fileSize}`);
        else if (size !== disk.fileSize) report('error', 'size-mismatch', `size is ${size} bytes, the manifest says ${disk.fileSize}`);
        if (options.checksums !== false) {
          const { matches, actual } = await fileChecksumMatches(path, disk.checksum, {
            signal: options.signal,
            onProgress: (bytesHashed) => options.onProgress?.({ file: disk.file, index: index - 1, total, bytesHashed }),
          });
          if (!matches) report('error', 'checksum-mismatch', `checksum is ${actual}, the manifest says ${disk.checksum}`);
        }
        await checkImage(path, disk.backingFile, disk.virtualSize, report, options.signal);
      }
      problems.push(...found);
      files.push({ backupId: backup.id, target: disk.target, file: disk.file, ok: found.every((problem) => problem.severity !== 'error') });
    }
  }

  for (const backup of set.backups) {
    for (const disk of backup.disks) {
      if (
        disk.backingFile !== null &&
        !present.has(disk.backingFile) &&
        !problems.some((problem) => problem.file === disk.file && problem.kind === 'missing')
      ) {
        problems.push({
          severity: 'error',
          kind: 'backing-missing',
          file: disk.file,
          backupId: backup.id,
          target: disk.target,
          message: `${disk.file}: backing file ${disk.backingFile} is missing, so backup ${backup.id} of ${disk.target} cannot be restored`,
        });
      }
    }
  }

  problems.push(...(await setLevelWarnings(set)));
  return { ok: problems.every((problem) => problem.severity !== 'error'), files, problems };
}

async function checkImage(
  path: string,
  expectedBacking: string | null,
  expectedVirtualSize: number,
  report: ProblemSink,
  signal: AbortSignal | undefined,
): Promise<void> {
  let info;
  try {
    info = await qemuImgInfo(path, { signal });
  } catch (error) {
    if (!isBackupSetError(error, 'QEMU_IMG_FAILED')) throw error;
    const { line, more } = summariseQemuImgOutput(error.message, path);
    report('error', 'image-corrupt', `not a readable image: ${line}${moreLines(more, 'qemu-img info')}`, more > 0 ? error.message : undefined);
    return;
  }
  if (info.format !== 'qcow2') {
    report('error', 'not-qcow2', `is ${info.format}, not qcow2`);
    return;
  }
  const backing = info.backingFilename ?? null;
  if (backing !== expectedBacking) {
    const relocatable =
      backing !== null && expectedBacking !== null && backing.endsWith(`/${expectedBacking}`)
        ? ' (an absolute or relative path instead of the plain file name: the set cannot be moved)'
        : '';
    report('error', 'backing-mismatch', `backing file is ${backing ?? 'none'}, the manifest says ${expectedBacking ?? 'none'}${relocatable}`);
  } else if (backing !== null && info.backingFormat !== undefined && info.backingFormat !== 'qcow2') {
    report('error', 'backing-mismatch', `backing file format is ${info.backingFormat}, expected qcow2`);
  }
  if (info.virtualSize !== expectedVirtualSize)
    report('error', 'virtual-size-mismatch', `virtual size is ${info.virtualSize}, the manifest says ${expectedVirtualSize}`);
  const check = await qemuImgCheck(path, { signal });
  if (!check.clean) {
    // One line per damaged cluster: hundreds for a truncated file. The first says what kind of damage.
    const { line, more } = summariseQemuImgOutput(check.stderr, path);
    const counts = [plural(check.corruptions, 'corruption'), plural(check.checkErrors, 'check error')].filter((count) => !count.startsWith('0 ')).join(' and ');
    const found = `qemu-img check found ${counts || 'damage'}`;
    report('error', 'image-corrupt', line === '' ? found : `${found}: ${line}${moreLines(more, 'qemu-img check')}`, more > 0 ? check.stderr : undefined);
  } else if (info.corrupt) {
    report('error', 'image-corrupt', 'qcow2 header is marked corrupt');
  }
}

type ProblemSink = (severity: VerifyProblem['severity'], kind: VerifyProblemKind, message: string, detail?: string) => void;

function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}

function moreLines(count: number, source: string): string {
  return count === 0 ? '' : ` (${plural(count, 'more line')} from ${source})`;
}

/** Qcow2 files no backup names, and a run that did not finish: worth knowing, not fatal. */
async function setLevelWarnings(set: BackupSet): Promise<VerifyProblem[]> {
  const warnings: VerifyProblem[] = [];
  const referenced = set.referencedFiles();
  const entries = await readdir(set.dir);
  for (const entry of entries.sort()) {
    if (entry === MANIFEST_FILE) continue;
    if (entry === PENDING_CHECKPOINTS_FILE) {
      const pending = await readPendingCheckpoints(set.dir).catch(() => []);
      warnings.push({
        severity: 'warning',
        kind: 'pending-checkpoints',
        file: entry,
        message: `${entry}: checkpoint${pending.length === 1 ? '' : 's'} ${pending.map((item) => `${item.name} (${item.reason})`).join(', ') || '(unreadable list)'} still in libvirt though no backup needs ${pending.length === 1 ? 'it' : 'them'}; the next backup deletes ${pending.length === 1 ? 'it' : 'them'}`,
      });
      continue;
    }
    if (entry === JOURNAL_FILE) {
      const run = set.interruptedRun;
      warnings.push({
        severity: 'warning',
        kind: 'interrupted-run',
        file: entry,
        message: `${entry}: a ${run?.kind ?? ''} run${run ? ` (pid ${run.pid} on ${run.hostname}, started ${run.startedAt})` : ''} did not finish; the next backup or prune cleans up after it`,
      });
      continue;
    }
    if ((entry.endsWith('.qcow2') || entry.includes('.qcow2.')) && !referenced.has(entry)) {
      warnings.push({ severity: 'warning', kind: 'orphan-file', file: entry, message: `${entry}: not part of any backup in the manifest` });
    }
  }
  return warnings;
}
