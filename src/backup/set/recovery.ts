import { hostname } from 'node:os';
import type { SetFiles } from './set-files.js';
import { BackupSetError } from '../errors.js';
import { describeOwner, ownerMayBeAlive } from './process-liveness.js';
import { addPendingCheckpoint } from './pending-checkpoints.js';
import { resumeInterruptedPrune } from './prune-finish.js';
import { readJournal, removeJournal, removeUnreferencedFiles, type RunJournalState } from './run-journal.js';

/** What opening a set for writing did about a run that had not finished. */
export interface RecoveryReport {
  /** The interrupted run. */
  run: Pick<RunJournalState, 'kind' | 'pid' | 'hostname' | 'startedAt'>;
  /** Files of that run that were deleted (never a file the manifest references). */
  removedFiles: string[];
  /** True when an interrupted prune was finished rather than undone. */
  completedPrune: boolean;
  /** The checkpoint the interrupted backup had created, now listed for deletion from libvirt. */
  leftoverCheckpoint?: string;
}

/**
 * Cleans up after a run that did not finish (crash, kill -9, power loss), found through its
 * journal: a backup run's files (and a prune's unfinished new files) are deleted unless the
 * manifest references them; a prune that had started switching files over is finished.
 * Called with the set's lock held.
 */
export async function recoverInterruptedRun(set: SetFiles): Promise<RecoveryReport | null> {
  const journal = await readJournal(set.dir);
  if (journal === null) return null;
  // Every run takes the lock before writing its journal, and we hold the lock now, so the
  // journal's run is over unless the lock was removed by hand. The pid check is a second
  // safety where it can be made (same host); for another host the lock has to be trusted.
  if (journal.hostname === hostname() && journal.pid !== process.pid && ownerMayBeAlive(journal)) {
    throw new BackupSetError('RUN_IN_PROGRESS', `a ${journal.kind} run (${describeOwner(journal)}) is still writing ${set.dir}; wait for it or stop it`);
  }
  const run = { kind: journal.kind, pid: journal.pid, hostname: journal.hostname, startedAt: journal.startedAt };
  const referenced = set.referencedFiles();
  const newFilesCommitted = journal.creates.filter((file) => !file.startsWith('.')).every((file) => referenced.has(file));
  if (journal.kind === 'prune' && journal.phase === 'switching' && !newFilesCommitted) {
    const result = await resumeInterruptedPrune(set, journal);
    return { run, removedFiles: result.deletedFiles, completedPrune: true };
  }
  // Handed on before the journal goes, so the name survives whatever happens next.
  const checkpoint = journal.kind === 'backup' ? journal.checkpoint : undefined;
  const leftover = checkpoint !== undefined && !set.backups.some((backup) => backup.checkpoint === checkpoint) ? checkpoint : undefined;
  if (leftover !== undefined)
    await addPendingCheckpoint(set.dir, leftover, `left by an interrupted backup run (pid ${journal.pid}, started ${journal.startedAt})`);
  const removedFiles = await removeUnreferencedFiles(set.dir, [...journal.creates, ...journal.deletes], referenced);
  await removeJournal(set.dir);
  return { run, removedFiles, completedPrune: false, ...(leftover !== undefined ? { leftoverCheckpoint: leftover } : {}) };
}
