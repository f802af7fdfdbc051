import type { Checkpoint } from '../../libvirt/checkpoint.js';
import type { Domain } from '../../libvirt/domain.js';
import { LibvirtError } from '../../libvirt/errors.js';
import type { BackupSet } from '../set/backup-set.js';
import { readPendingCheckpoints, removePendingCheckpoints } from '../set/pending-checkpoints.js';

/** Checkpoints in libvirt that no backup of a set needs any more, and how they go. */

export async function findCheckpoint(domain: Domain, name: string): Promise<Checkpoint | undefined> {
  try {
    return await domain.lookupCheckpointByName(name);
  } catch (error) {
    if (error instanceof LibvirtError && error.codeName === 'VIR_ERR_NO_DOMAIN_CHECKPOINT') return undefined;
    throw error;
  }
}

export async function deleteCheckpointIfPresent(domain: Domain, name: string): Promise<'deleted' | 'absent'> {
  const checkpoint = await findCheckpoint(domain, name);
  if (checkpoint === undefined) return 'absent';
  try {
    await checkpoint.delete();
    return 'deleted';
  } catch (error) {
    if (error instanceof LibvirtError && error.codeName === 'VIR_ERR_NO_DOMAIN_CHECKPOINT') return 'absent';
    throw error;
  }
}

/** Deletes the checkpoints interrupted runs of this set left in libvirt (see pending-checkpoints). */
export async function deletePendingCheckpoints(set: BackupSet, domain: Domain, notify: (message: string) => void): Promise<string[]> {
  const pending = await readPendingCheckpoints(set.dir);
  if (pending.length === 0) return [];
  const done: string[] = [];
  for (const entry of pending) {
    // A name the manifest took in is a restore point's, never a leftover.
    if (!set.backups.some((backup) => backup.checkpoint === entry.name)) {
      if ((await deleteCheckpointIfPresent(domain, entry.name)) === 'deleted') {
        notify(`deleted checkpoint ${entry.name} ${entry.reason}`);
      }
    }
    done.push(entry.name);
  }
  await removePendingCheckpoints(set.dir, done);
  return done;
}
