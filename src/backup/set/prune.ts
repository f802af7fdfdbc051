import { constants as fsConstants } from 'node:fs';
import { chmod, copyFile, rename, stat, unlink } from 'node:fs/promises';
import type { BackupSet } from './backup-set.js';
import type { ChainLink } from './set-files.js';
import { assertChainIntact } from './chain-check.js';
import { fsyncDirectory, fsyncFile } from './atomic-file.js';
import { fileChecksumMatches } from '../checksum.js';
import { BackupSetError, throwIfAborted } from '../errors.js';
import { type Manifest } from './manifest.js';
import { qemuImgConvert, qemuImgOwnDataBytes, qemuImgRebaseSafe } from '../qcow2/qemu-img.js';
import { factsOf, finishPrune } from './prune-finish.js';
import { obsoleteCheckpoints, planPrune, type FileFacts, type MergeStep, type PruneOptions, type PrunePlan, type PruneResult } from './prune-plan.js';
import { removeJournal, removeUnreferencedFiles, writeJournal, type RunJournalState } from './run-journal.js';
import { currentOwner } from './process-liveness.js';
import { assertFilesNotInUse } from './set-users.js';

/**
 * Prune keeps the newest `keep` restore points and drops the older ones.
 *
 * Which files survive: every kept backup must stay restorable. The oldest kept backup (K)
 * usually depends on older backups; their data is folded into a new file for K. A kept
 * differential depends on its full, which may be older than K; such a full is *retained*
 * (it stays in the set as a restore point) because folding it into every differential
 * would copy the full image once per differential.
 *
 * Crash safety, step by step (the manifest is the only thing that says what the set is):
 * 1. The journal (`.in-progress.json`, phase `merging`) is written first, listing every
 *    file prune will create.
 * 2. K's new file is built under a temporary name (convert of K's chain, or a copy of K's
 *    file safely rebased onto the retained full), synced, and renamed to its final name.
 *    Nothing the manifest references has changed. A crash here leaves only unreferenced
 *    new files, which recovery (next write-open) deletes.
 * 3. The journal moves to phase `switching`. The kept file that was backed by K's old file
 *    gets its header pointed at K's new file with `rebase -u` (same guest content, so no data
 *    changes). This is the one in-place change before the manifest says so: from here on the
 *    manifest's checksum and backing name for that file are stale until step 4, so
 *    recovery *finishes* the prune rather than undoing it (redoing `rebase -u` is
 *    idempotent and the plan is recomputed from the unchanged manifest and `keep`). Until
 *    then a read-only restore of the later backups reports the pending prune instead of
 *    reading a chain that disagrees with the manifest.
 * 4. The manifest is replaced atomically. Old or new, it names only complete files.
 * 5. Files no longer referenced are deleted, then the journal. A crash here leaves files
 *    that recovery deletes (only those the manifest does not reference).
 * The abort signal is honoured up to step 3; after that, finishing is the quickest way to
 * a consistent set.
 */

async function buildMergedFile(set: BackupSet, merge: MergeStep, options: PruneOptions): Promise<void> {
  const temporary = set.pathOf(merge.temporaryFile);
  await unlink(temporary).catch(() => undefined);
  const onProgress = (fraction: number): void => options.onProgress?.({ step: 'merge', file: merge.newFile, fraction });
  if (merge.backingFile === null) {
    await qemuImgConvert(set.pathOf(merge.oldFile), temporary, { sourceFormat: 'qcow2', outputFormat: 'qcow2', signal: options.signal, onProgress });
  } else {
    // convert -B would only copy the top layer; a safe rebase of a copy merges every layer
    // between the old file and the retained base. Reflink makes the copy cheap where possible.
    await copyFile(set.pathOf(merge.oldFile), temporary, fsConstants.COPYFILE_FICLONE);
    await qemuImgRebaseSafe(temporary, merge.backingFile, { signal: options.signal, onProgress });
  }
  // qemu-img creates files by the umask; a backup file is private like every other.
  await chmod(temporary, 0o600);
  await fsyncFile(temporary);
  await rename(temporary, set.pathOf(merge.newFile));
  await fsyncDirectory(set.dir);
}

function journalFor(plan: PrunePlan, phase: 'merging' | 'switching'): RunJournalState {
  return {
    ...currentOwner(),
    kind: 'prune',
    phase,
    keep: plan.keep,
    creates: plan.creates,
    deletes: phase === 'merging' ? [] : plan.deletes,
    rebases: plan.rebases.map(({ file, from, to }) => ({ file, from, to })),
  };
}

/**
 * Removes all but the newest `keep` restore points, merging what the kept ones still need into them first; survives interruption at any step (the next
 * open finishes or undoes it).
 */
export async function prune(set: BackupSet, options: PruneOptions): Promise<PruneResult> {
  if (!set.writable) throw new BackupSetError('INVALID_ARGUMENT', `backup set ${set.dir} is open read-only; prune needs BackupSet.openForWrite`);
  if (set.runInProgress) throw new BackupSetError('RUN_IN_PROGRESS', `a backup run on ${set.dir} is in progress; prune after it commits or aborts`);
  throwIfAborted(options.signal);
  const before = set.manifest as Manifest;
  const plan = planPrune(before, options.keep);
  if (plan.removed.length === 0) {
    return { kept: plan.kept, retained: plan.retained, removed: [], merged: null, deletedFiles: [], obsoleteCheckpoints: obsoleteCheckpoints(before, before) };
  }
  for (const merge of plan.merges) {
    const exists = await stat(set.pathOf(merge.newFile)).then(
      () => true,
      () => false,
    );
    if (exists) {
      throw new BackupSetError('RECORD_INVALID', `cannot prune: ${set.pathOf(merge.newFile)} already exists but is not part of the set; move it away`, {
        path: set.pathOf(merge.newFile),
      });
    }
  }

  const touched = new Set([...plan.deletes, ...plan.rebases.map((rebase) => rebase.file)]);
  const stale = await assertFilesNotInUse(
    set.dir,
    touched,
    `prune backup${plan.removed.length === 1 ? '' : 's'} ${plan.removed.join(', ')}`,
    options.checkSetUser,
  );
  const staleSetUsers = stale.map(({ user, state }) => ({ domain: user.domain.name, reason: state.inUse ? '' : state.reason }));

  await assertInputsIntact(set, plan, options);

  await writeJournal(set.dir, journalFor(plan, 'merging'));
  const facts = new Map<string, FileFacts & { dataBytes?: number }>();
  try {
    for (const merge of plan.merges) {
      await buildMergedFile(set, merge, options);
      facts.set(merge.newFile, { ...(await factsOf(set, merge.newFile, options)), dataBytes: await qemuImgOwnDataBytes(set.pathOf(merge.newFile)) });
      throwIfAborted(options.signal);
    }
    await options.hooks?.afterMerge?.();
    throwIfAborted(options.signal);
  } catch (error) {
    // Nothing referenced has changed yet: undo by deleting what this prune created.
    await removeUnreferencedFiles(set.dir, plan.creates, set.referencedFiles());
    await removeJournal(set.dir);
    throw error;
  }

  await writeJournal(set.dir, journalFor(plan, 'switching'));
  try {
    const result = await finishPrune(set, plan, before, facts, options);
    return staleSetUsers.length > 0 ? { ...result, staleSetUsers } : result;
  } catch (error) {
    // Leave the journal: the next write-open finishes the prune (see recovery).
    if (error instanceof BackupSetError) {
      error.message += ` (the prune was interrupted after its new files were complete; opening ${set.dir} for writing again finishes it)`;
    }
    throw error;
  }
}

/**
 * Every file prune reads or re-stamps must match its checksum first: a merged file gets a
 * fresh checksum, and so does a rebased one, so a damaged byte let through here would come
 * out certified as good, with the original, the only evidence, deleted.
 */
async function assertInputsIntact(set: BackupSet, plan: PrunePlan, options: PruneOptions): Promise<void> {
  const links = new Map<string, ChainLink>();
  if (plan.mergeInto !== null) {
    for (const merge of plan.merges) {
      for (const link of set.chainFor(merge.target, plan.mergeInto.id)) links.set(link.disk.file, link);
    }
  }
  for (const rebase of plan.rebases) {
    for (const link of set.chainFor(rebase.target, rebase.backupId)) if (link.disk.file === rebase.file) links.set(link.disk.file, link);
  }
  const chain = [...links.values()];
  await assertChainIntact(set, chain, { signal: options.signal });
  for (const link of chain) {
    throwIfAborted(options.signal);
    const { matches, actual } = await fileChecksumMatches(link.path, link.disk.checksum, {
      signal: options.signal,
      onProgress: (bytes) => options.onProgress?.({ step: 'check', file: link.disk.file, fraction: link.disk.fileSize === 0 ? 1 : bytes / link.disk.fileSize }),
    });
    if (!matches) {
      throw new BackupSetError(
        'CHECKSUM_MISMATCH',
        `cannot prune: ${link.disk.file} is damaged (checksum ${actual}, the manifest says ${link.disk.checksum}); prune would fold it into a file with a fresh checksum. Nothing was changed; run verify`,
        { path: link.path },
      );
    }
  }
}

export { planPrune, type PruneHooks, type PruneOptions, type PrunePlan, type PruneProgress, type PruneResult } from './prune-plan.js';
