import { rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type { BackupSet, ChainLink } from '../set/backup-set.js';
import { fsyncDirectory } from '../set/atomic-file.js';
import { OpenedChain, type ChainFile } from './chain-restore.js';
import { BackupSetError, throwIfAborted } from '../errors.js';
import { errnoCode } from '../../common/fs-errors.js';
import { formatBytes } from '../../common/format-bytes.js';
import { partialPathFor, removeAbandonedPartials } from './partial-output.js';
import { DEFAULT_OUTPUT_MODE } from './restore-output.js';

/** What to restore, from which point, and where to. */
export interface RestoreOptions {
  /** Output file (one disk) or existing directory (`<to>/<target>.<format>` per disk). */
  to: string;
  /** Backup id to restore; default the newest. */
  at?: string;
  /** Restore only this disk; default every disk of that backup. */
  disk?: string;
  format: 'qcow2' | 'raw';
  /** Replace existing output files; otherwise their presence is an error. */
  overwrite?: boolean;
  /**
   * Every chain file is checked against the manifest's checksum and size in the same
   * read that restores it; a mismatch fails the restore with CHECKSUM_MISMATCH and
   * leaves no output (default true). false is for salvaging a damaged chain: it is
   * restored anyway, each mismatch is reported as a notice, and a file too damaged for
   * our qcow2 reader is handed to qemu-img.
   */
  verifyChecksums?: boolean;
  /**
   * @deprecated Checksums are always checked now (see `verifyChecksums`). Still accepted;
   * `true` keeps its old meaning and overrides `verifyChecksums: false`.
   */
  checksums?: boolean;
  /** Mode of the restored images, exactly, whatever the umask (default 0o600: disks hold secrets). */
  mode?: number;
  signal?: AbortSignal;
  /** Called as each disk is written, with the fraction done. */
  onProgress?: (progress: { target: string; fraction: number }) => void;
  /** Things worth telling the user that do not stop the restore (also in `RestoreResult.notices`). */
  onNotice?: (message: string) => void;
}

/** One disk restored to a file. */
export interface RestoredDisk {
  target: string;
  path: string;
  format: 'qcow2' | 'raw';
  /** The files read, base first. */
  chain: string[];
  /** 'one-pass': read and checked in one pass; 'qemu-img': our reader refused a file and qemu-img converted the chain. */
  method: 'one-pass' | 'qemu-img';
  /** Bytes of the chain files read front to back (each file once in a one-pass restore). */
  bytesRead: number;
  /** Bytes read for qcow2 headers and mapping tables, besides. */
  metadataBytesRead: number;
}

/** What a restore wrote: one file per disk, and notices. */
export interface RestoreResult {
  backupId: string;
  disks: RestoredDisk[];
  notices: string[];
}

/**
 * Writes a standalone image of each disk as it was at one backup. All outputs are written
 * under temporary names and renamed only when every disk is done, so a failed or aborted
 * restore leaves no output behind; the temporaries of a restore that was killed are
 * removed by the next restore into the same directory.
 */
export async function restore(set: BackupSet, options: RestoreOptions): Promise<RestoreResult> {
  if (options.format !== 'qcow2' && options.format !== 'raw') {
    throw new BackupSetError('INVALID_ARGUMENT', `format must be 'qcow2' or 'raw', got '${String(options.format)}'`);
  }
  const mode = options.mode ?? DEFAULT_OUTPUT_MODE;
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777)
    throw new BackupSetError('INVALID_ARGUMENT', `mode must be a file mode such as 0o600, got ${String(options.mode)}`);
  const verifyChecksums = options.checksums === true || options.verifyChecksums !== false;
  throwIfAborted(options.signal);
  const backup = options.at === undefined ? set.latest() : set.getBackup(options.at);
  if (backup === null) throw new BackupSetError('NOT_FOUND', `${set.dir} holds no backups to restore`);
  const targets = options.disk === undefined ? backup.disks.map((disk) => disk.target) : [options.disk];
  const chains = targets.map((target) => ({ target, chain: set.chainFor(target, backup.id) }));

  const notices: string[] = [];
  const notice = (message: string) => {
    notices.push(message);
    options.onNotice?.(message);
  };
  const outputs = await outputPaths(options.to, targets, options.format);
  await prepareOutputs(outputs, options, notice);

  const pendingPrune =
    set.interruptedRun?.kind === 'prune' ? ' (an interrupted prune is pending; opening the set for writing, e.g. the next backup or prune, finishes it)' : '';
  // Every chain is opened and its metadata checked before anything is written.
  const opened: Array<{ target: string; chain: ChainLink[]; files: OpenedChain }> = [];
  const temporaries = new Map<string, string>();
  try {
    for (const { target, chain } of chains) {
      await assertChainPresent(chain, pendingPrune);
      const files = await OpenedChain.open(chain.map(chainFile), {
        signal: options.signal,
        chainHint: pendingPrune,
        backingMatches: (actual, expected) => basename(actual) === expected && resolve(set.dir, actual) === set.pathOf(expected),
      });
      opened.push({ target, chain, files });
    }
    const disks: RestoredDisk[] = [];
    for (const { target, chain, files } of opened) {
      const output = outputs.get(target)!;
      const temporary = partialPathFor(output);
      temporaries.set(target, temporary);
      const report = await files.restoreTo(temporary, {
        format: options.format,
        verifyChecksums,
        mode,
        signal: options.signal,
        onProgress: (fraction) => options.onProgress?.({ target, fraction }),
        onNotice: notice,
      });
      disks.push({
        target,
        path: output,
        format: options.format,
        chain: chain.map((link) => link.disk.file),
        method: report.method,
        bytesRead: report.bytesStreamed,
        metadataBytesRead: report.metadataBytesRead,
      });
    }
    throwIfAborted(options.signal);
    for (const [target, temporary] of temporaries) {
      await rename(temporary, outputs.get(target)!);
      temporaries.delete(target);
    }
    for (const directory of new Set([...outputs.values()].map((output) => dirname(output)))) await fsyncDirectory(directory);
    return { backupId: backup.id, disks, notices };
  } finally {
    for (const temporary of temporaries.values()) await unlink(temporary).catch(() => undefined);
    for (const { files } of opened) await files.close();
  }
}

/** Sweeps partial outputs of restores that died, and refuses outputs that exist unless overwriting is allowed. */
async function prepareOutputs(outputs: Map<string, string>, options: RestoreOptions, notice: (message: string) => void): Promise<void> {
  for (const directory of new Set([...outputs.values()].map((output) => dirname(output)))) {
    const sweep = await removeAbandonedPartials(directory);
    for (const partial of sweep.removed) {
      notice(
        `removed ${partial.path} (${formatBytes(partial.bytes)}): the partial ${basename(partial.output)} of a restore (pid ${partial.pid}) that did not finish`,
      );
    }
    for (const path of sweep.ownerless)
      notice(`left ${path} in place: a partial output of an older version whose owner cannot be told; delete it if no restore is running`);
  }
  if (options.overwrite) return;
  for (const output of outputs.values()) {
    if (await exists(output)) throw new BackupSetError('OUTPUT_EXISTS', `${output} already exists; choose another path or allow overwriting`, { path: output });
  }
}

function chainFile(link: ChainLink): ChainFile {
  const { disk } = link;
  return { name: disk.file, path: link.path, checksum: disk.checksum, size: disk.fileSize, backingFile: disk.backingFile, virtualSize: disk.virtualSize };
}

/** A missing file is named from the file that needs it, which is what the user will look at. */
async function assertChainPresent(chain: readonly ChainLink[], pendingPrune: string): Promise<void> {
  for (let index = chain.length - 1; index >= 0; index -= 1) {
    const link = chain[index]!;
    if (await exists(link.path)) continue;
    const child = chain[index + 1];
    const message = child ? `${child.disk.file}: backing file ${link.disk.file} is missing` : `${link.disk.file} is missing`;
    throw new BackupSetError('CHAIN_BROKEN', `${message}${pendingPrune}`, { path: link.path });
  }
}

async function outputPaths(to: string, targets: string[], format: 'qcow2' | 'raw'): Promise<Map<string, string>> {
  const absolute = resolve(to);
  const info = await stat(absolute).catch((error: unknown) => {
    if (errnoCode(error) === 'ENOENT') return undefined;
    throw error;
  });
  if (info?.isDirectory()) return new Map(targets.map((target) => [target, join(absolute, `${target}.${format}`)]));
  if (targets.length > 1) {
    throw new BackupSetError(
      'INVALID_ARGUMENT',
      `restoring ${targets.length} disks (${targets.join(', ')}) needs an existing directory as destination, and ${absolute} is not one; or choose one disk`,
      { path: absolute },
    );
  }
  const parent = await stat(dirname(absolute)).catch(() => undefined);
  if (!parent?.isDirectory())
    throw new BackupSetError('INVALID_ARGUMENT', `cannot write ${absolute}: ${dirname(absolute)} is not a directory`, { path: absolute });
  return new Map([[targets[0]!, absolute]]);
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
