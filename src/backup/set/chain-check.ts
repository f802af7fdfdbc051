import { stat } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import type { BackupSet, ChainLink } from './backup-set.js';
import { BackupSetError } from '../errors.js';
import { errnoCode } from '../../common/fs-errors.js';
import { qemuImgInfo } from '../qcow2/qemu-img.js';

/**
 * Checks that a chain from the manifest is what is on disk: each file exists and its qcow2
 * header names the backing file the manifest says (or none). Cheap (headers only), so
 * restore runs it every time; checksums are `verify`'s job.
 */
export async function assertChainIntact(set: BackupSet, chain: readonly ChainLink[], options: { signal?: AbortSignal } = {}): Promise<void> {
  const pendingPrune =
    set.interruptedRun?.kind === 'prune' ? ' (an interrupted prune is pending; opening the set for writing, e.g. the next backup or prune, finishes it)' : '';
  for (let index = chain.length - 1; index >= 0; index -= 1) {
    const link = chain[index]!;
    const { file } = link.disk;
    if (!(await fileExists(link.path))) {
      const child = chain[index + 1];
      const message = child ? `${child.disk.file}: backing file ${file} is missing` : `${file} is missing`;
      throw new BackupSetError('CHAIN_BROKEN', `${message}${pendingPrune}`, { path: link.path });
    }
  }
  for (const link of chain) {
    const { file, backingFile } = link.disk;
    const info = await qemuImgInfo(link.path, { signal: options.signal });
    if (info.format !== 'qcow2') throw new BackupSetError('CHAIN_BROKEN', `${file}: is ${info.format}, not qcow2`, { path: link.path });
    const actual = info.backingFilename ?? null;
    if (!sameBacking(set, actual, backingFile)) {
      throw new BackupSetError('CHAIN_BROKEN', `${file}: backing file is ${actual ?? 'none'} but the manifest says ${backingFile ?? 'none'}${pendingPrune}`, {
        path: link.path,
      });
    }
  }
}

/** A backing name written as a path to the same file in the set still reads correctly. */
function sameBacking(set: BackupSet, actual: string | null, expected: string | null): boolean {
  if (actual === expected) return true;
  if (actual === null || expected === null) return false;
  return basename(actual) === expected && resolve(set.dir, actual) === set.pathOf(expected);
}

async function fileExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return false;
    throw error;
  }
}
