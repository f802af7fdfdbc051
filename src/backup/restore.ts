import { randomBytes } from 'node:crypto';
import { rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type { BackupSet, ChainLink } from './backup-set.js';
import { fsyncDirectory, fsyncFile } from './atomic-file.js';
import { assertChainIntact } from './chain-check.js';
import { fileChecksumMatches } from './checksum.js';
import { BackupSetError, errnoCode, throwIfAborted } from './errors.js';
import { qemuImgConvert } from './qemu-img.js';

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
   * Also compare every chain file's checksum with the manifest before converting (reads the
   * chain twice; `verify` does the same for the whole set).
   */
  checksums?: boolean;
  signal?: AbortSignal;
  onProgress?: (progress: { target: string; fraction: number }) => void;
}

export interface RestoredDisk {
  target: string;
  path: string;
  format: 'qcow2' | 'raw';
  /** The files read, base first. */
  chain: string[];
}

export interface RestoreResult {
  backupId: string;
  disks: RestoredDisk[];
}

/**
 * Writes a standalone image of each disk as it was at one backup. All outputs are written
 * under temporary names and renamed only when every disk is done, so a failed or aborted
 * restore leaves no output behind.
 */
export async function restore(set: BackupSet, options: RestoreOptions): Promise<RestoreResult> {
  if (options.format !== 'qcow2' && options.format !== 'raw') {
    throw new BackupSetError('INVALID_ARGUMENT', `format must be 'qcow2' or 'raw', got '${String(options.format)}'`);
  }
  throwIfAborted(options.signal);
  const backup = options.at === undefined ? set.latest() : set.getBackup(options.at);
  if (backup === null) throw new BackupSetError('NOT_FOUND', `${set.dir} holds no backups to restore`);
  const targets = options.disk === undefined ? backup.disks.map((disk) => disk.target) : [options.disk];
  const chains = targets.map((target) => ({ target, chain: set.chainFor(target, backup.id) }));

  const outputs = await outputPaths(options.to, targets, options.format);
  if (!options.overwrite) {
    for (const output of outputs.values()) {
      if (await exists(output)) throw new BackupSetError('OUTPUT_EXISTS', `${output} already exists; choose another path or allow overwriting`, { path: output });
    }
  }
  for (const { chain } of chains) {
    await assertChainIntact(set, chain, { signal: options.signal });
    if (options.checksums) await assertChecksums(chain, options.signal);
  }

  const temporaries = new Map<string, string>();
  try {
    for (const { target, chain } of chains) {
      const output = outputs.get(target)!;
      const temporary = join(dirname(output), `.${basename(output)}.partial-${randomBytes(4).toString('hex')}`);
      temporaries.set(target, temporary);
      await qemuImgConvert(chain.at(-1)!.path, temporary, {
        sourceFormat: 'qcow2',
        outputFormat: options.format,
        signal: options.signal,
        onProgress: (fraction) => options.onProgress?.({ target, fraction }),
      });
      await fsyncFile(temporary);
    }
    throwIfAborted(options.signal);
    for (const [target, temporary] of temporaries) {
      await rename(temporary, outputs.get(target)!);
      temporaries.delete(target);
    }
    for (const directory of new Set([...outputs.values()].map((output) => dirname(output)))) await fsyncDirectory(directory);
  } finally {
    for (const temporary of temporaries.values()) await unlink(temporary).catch(() => undefined);
  }
  return {
    backupId: backup.id,
    disks: chains.map(({ target, chain }) => ({ target, path: outputs.get(target)!, format: options.format, chain: chain.map((link: ChainLink) => link.disk.file) })),
  };
}

async function assertChecksums(chain: readonly ChainLink[], signal: AbortSignal | undefined): Promise<void> {
  for (const link of chain) {
    const { matches, actual } = await fileChecksumMatches(link.path, link.disk.checksum, signal ? { signal } : {});
    if (!matches) {
      throw new BackupSetError('CHAIN_BROKEN', `${link.disk.file}: checksum is ${actual}, the manifest says ${link.disk.checksum}; the file is damaged`, { path: link.path });
    }
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
    throw new BackupSetError('INVALID_ARGUMENT', `restoring ${targets.length} disks (${targets.join(', ')}) needs an existing directory as destination, and ${absolute} is not one; or choose one disk`, { path: absolute });
  }
  const parent = await stat(dirname(absolute)).catch(() => undefined);
  if (!parent?.isDirectory()) throw new BackupSetError('INVALID_ARGUMENT', `cannot write ${absolute}: ${dirname(absolute)} is not a directory`, { path: absolute });
  return new Map([[targets[0]!, absolute]]);
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
