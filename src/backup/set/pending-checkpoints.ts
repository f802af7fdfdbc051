import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from './atomic-file.js';
import { BackupSetError } from '../errors.js';
import { describeFsError, errnoCode } from '../../common/fs-errors.js';

/**
 * Checkpoints that runs of this set created in libvirt but that no backup of the set
 * references: a run killed outright, a libvirtd crash, a domain destroyed mid-run. Each
 * still holds an active dirty bitmap on the domain's disks, so it must be deleted; libvirt
 * refuses while the domain is shut off, so the names wait here until a run can do it.
 */
export const PENDING_CHECKPOINTS_FILE = '.pending-checkpoints.json';

/** A checkpoint left in libvirt by an interrupted run, waiting to be deleted. */
export interface PendingCheckpoint {
  name: string;
  /** Why it was left (e.g. "backup 0004 was interrupted"). */
  reason: string;
  since: string;
}

/** The checkpoints waiting to be deleted; none when the file is absent. */
export async function readPendingCheckpoints(dir: string): Promise<PendingCheckpoint[]> {
  const path = join(dir, PENDING_CHECKPOINTS_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return [];
    throw new BackupSetError('SET_IO', `cannot read ${path}: ${describeFsError(error)}`, { path, cause: error });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new BackupSetError('MANIFEST_INVALID', `${path} is not valid JSON; it lists checkpoints to delete from libvirt: fix or remove it`, { path });
  }
  const list = (parsed as { checkpoints?: unknown }).checkpoints;
  if (!Array.isArray(list)) throw new BackupSetError('MANIFEST_INVALID', `${path}: checkpoints must be a list`, { path });
  return list.map((entry: unknown, index) => {
    const { name, reason, since } = (entry ?? {}) as Record<string, unknown>;
    if (typeof name !== 'string' || name === '' || typeof reason !== 'string' || typeof since !== 'string') {
      throw new BackupSetError('MANIFEST_INVALID', `${path}: checkpoints[${index}] needs name, reason and since`, { path });
    }
    return { name, reason, since };
  });
}

async function writePending(dir: string, list: readonly PendingCheckpoint[]): Promise<void> {
  const path = join(dir, PENDING_CHECKPOINTS_FILE);
  try {
    if (list.length === 0) {
      const { unlink } = await import('node:fs/promises');
      await unlink(path).catch((error: unknown) => {
        if (errnoCode(error) !== 'ENOENT') throw error;
      });
      return;
    }
    await writeFileAtomic(path, `${JSON.stringify({ checkpoints: list }, null, 2)}\n`);
  } catch (error) {
    if (error instanceof BackupSetError) throw error;
    throw new BackupSetError('SET_IO', `cannot write ${path}: ${describeFsError(error)}`, { path, cause: error });
  }
}

/** Records a checkpoint libvirt still holds that the set no longer uses, to be deleted by the next run that can. */
export async function addPendingCheckpoint(dir: string, name: string, reason: string): Promise<void> {
  const list = await readPendingCheckpoints(dir);
  if (list.some((entry) => entry.name === name)) return;
  await writePending(dir, [...list, { name, reason, since: new Date().toISOString() }]);
}

export async function removePendingCheckpoints(dir: string, names: readonly string[]): Promise<void> {
  if (names.length === 0) return;
  const list = await readPendingCheckpoints(dir);
  const gone = new Set(names);
  await writePending(
    dir,
    list.filter((entry) => !gone.has(entry.name)),
  );
}
