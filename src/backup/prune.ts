import { constants as fsConstants } from 'node:fs';
import { chmod, copyFile, rename, stat, unlink } from 'node:fs/promises';
import type { BackupSet, ChainLink } from './backup-set.js';
import { assertChainIntact } from './chain-check.js';
import { fsyncDirectory, fsyncFile } from './atomic-file.js';
import { checksumFile, fileChecksumMatches } from './checksum.js';
import { BackupSetError, throwIfAborted } from './errors.js';
import { backupFileName, type BackupLevel, type BackupRecord, type DiskRecord, type Manifest } from './manifest.js';
import { qemuImgConvert, qemuImgOwnDataBytes, qemuImgRebaseSafe, qemuImgRebaseUnsafe } from './qemu-img.js';
import { removeJournal, removeUnreferencedFiles, writeJournal, type PlannedRebase, type RunJournalState } from './run-journal.js';
import { currentOwner } from './process-liveness.js';

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

export interface PruneHooks {
  /** After K's new files are complete, before the journal enters the switching phase. */
  afterMerge?: () => void | Promise<void>;
  /** After the kept files' headers were rebased, before their checksums are taken. */
  afterRebase?: () => void | Promise<void>;
  /** Right before the manifest is replaced. */
  beforeManifestWrite?: () => void | Promise<void>;
  /** After the manifest is replaced, before old files are deleted. */
  afterManifestWrite?: () => void | Promise<void>;
}

export interface PruneProgress {
  /** `check`: reading a file prune depends on, to compare it with its checksum first. */
  step: 'check' | 'merge' | 'rebase' | 'checksum' | 'delete';
  file: string;
  /** 0..1 within the file, when known. */
  fraction?: number;
}

export interface PruneOptions {
  /** Number of newest restore points to keep restorable (at least 1; the newest is always kept). */
  keep: number;
  signal?: AbortSignal;
  onProgress?: (progress: PruneProgress) => void;
  /** Called between steps; tests use them to simulate crashes at each point. */
  hooks?: PruneHooks;
}

export interface PruneResult {
  /** Ids of the newest `keep` backups. */
  kept: string[];
  /** Older full backups left in place because kept differentials need them. */
  retained: string[];
  /** Ids no longer in the set. */
  removed: string[];
  /** The kept backup whose files now hold the removed backups' data, if any. */
  merged: { id: string; from: string[]; level: BackupLevel } | null;
  deletedFiles: string[];
  /**
   * Checkpoints named by the set before the prune that no future backup starts from:
   * all but the newest backup's (next incremental) and the full backups' (next
   * differential). The caller deletes them from libvirt; one may already be gone.
   */
  obsoleteCheckpoints: string[];
}

interface MergeStep {
  target: string;
  oldFile: string;
  newFile: string;
  temporaryFile: string;
  /** Retained file the new file is an overlay of, or null for a standalone image. */
  backingFile: string | null;
  level: BackupLevel;
}

interface RebaseStep extends PlannedRebase {
  backupId: string;
  target: string;
}

export interface PrunePlan {
  keep: number;
  kept: string[];
  retained: string[];
  removed: string[];
  /** The oldest kept backup when its files must be rebuilt. */
  mergeInto: { id: string; newParent: string | null; level: BackupLevel; mergedFrom: string[] } | null;
  merges: MergeStep[];
  rebases: RebaseStep[];
  /** Files to delete once the new manifest is written. */
  deletes: string[];
  /** Files this prune creates (temporary and final names). */
  creates: string[];
}

/** Works out what prune does; pure, so recovery can recompute the same plan. */
export function planPrune(manifest: Manifest, keep: number): PrunePlan {
  if (!Number.isSafeInteger(keep) || keep < 1) {
    throw new BackupSetError('INVALID_ARGUMENT', `keep must be a whole number of at least 1 (the newest backup is always kept), got ${keep}`);
  }
  const backups = manifest.backups;
  const plan: PrunePlan = { keep, kept: backups.slice(-keep).map((backup) => backup.id), retained: [], removed: [], mergeInto: null, merges: [], rebases: [], deletes: [], creates: [] };
  if (backups.length <= keep) return plan;

  const byId = new Map(backups.map((backup) => [backup.id, backup]));
  const owners = new Map<string, { backup: BackupRecord; disk: DiskRecord }>();
  for (const backup of backups) for (const disk of backup.disks) owners.set(disk.file, { backup, disk });
  const oldestKept = backups[backups.length - keep]!;
  const kept = new Set(plan.kept);
  const retained = new Set<string>();

  // Older backups a kept backup reaches without passing through the oldest kept one must stay.
  const pending = backups.filter((backup) => kept.has(backup.id) && backup !== oldestKept);
  while (pending.length > 0) {
    const backup = pending.pop()!;
    for (const disk of backup.disks) {
      let file = disk.backingFile;
      while (file !== null) {
        const owner = owners.get(file)!;
        if (owner.backup === oldestKept || kept.has(owner.backup.id)) break;
        if (!retained.has(owner.backup.id)) {
          retained.add(owner.backup.id);
          pending.push(owner.backup);
        }
        file = owner.disk.backingFile;
      }
    }
  }

  if (oldestKept.parent !== null && !retained.has(oldestKept.parent)) {
    const mergedFrom = new Set(oldestKept.mergedFrom ?? []);
    let newParent: string | null = oldestKept.parent;
    while (newParent !== null && !retained.has(newParent)) {
      const ancestor: BackupRecord = byId.get(newParent)!;
      mergedFrom.add(ancestor.id);
      for (const id of ancestor.mergedFrom ?? []) mergedFrom.add(id);
      newParent = ancestor.parent;
    }
    if (newParent !== null && byId.get(newParent)!.level !== 'full') {
      // Only differentials retain older backups, and they point at fulls.
      throw new BackupSetError('CHAIN_BROKEN', `cannot prune: backup ${newParent} would become the base of ${oldestKept.id} but is not a full backup`);
    }
    const retainedFiles = new Set(backups.filter((backup) => retained.has(backup.id)).flatMap((backup) => backup.disks.map((disk) => disk.file)));
    for (const disk of oldestKept.disks) {
      if (disk.backingFile === null) continue;
      let backingFile: string | null = null;
      for (let file: string | null = disk.backingFile; file !== null; file = owners.get(file)!.disk.backingFile) {
        if (retainedFiles.has(file)) {
          backingFile = file;
          break;
        }
      }
      const level: BackupLevel = backingFile === null ? 'full' : 'diff';
      const newFile = backupFileName(disk.target, oldestKept.id, level);
      plan.merges.push({ target: disk.target, oldFile: disk.file, newFile, temporaryFile: `.${newFile}.partial`, backingFile, level });
    }
    plan.mergeInto = { id: oldestKept.id, newParent, level: newParent === null ? 'full' : 'diff', mergedFrom: [...mergedFrom].sort() };
  }

  const replaced = new Map(plan.merges.map((merge) => [merge.oldFile, merge.newFile]));
  for (const backup of backups) {
    if (!kept.has(backup.id) || backup === oldestKept) continue;
    for (const disk of backup.disks) {
      const to = disk.backingFile === null ? undefined : replaced.get(disk.backingFile);
      if (to !== undefined) plan.rebases.push({ backupId: backup.id, target: disk.target, file: disk.file, from: disk.backingFile!, to });
    }
  }

  plan.retained = backups.filter((backup) => retained.has(backup.id)).map((backup) => backup.id);
  plan.removed = backups.filter((backup) => !kept.has(backup.id) && !retained.has(backup.id)).map((backup) => backup.id);
  const removed = new Set(plan.removed);
  plan.deletes = [
    ...backups.filter((backup) => removed.has(backup.id)).flatMap((backup) => backup.disks.map((disk) => disk.file)),
    ...plan.merges.map((merge) => merge.oldFile),
  ];
  plan.creates = plan.merges.flatMap((merge) => [merge.temporaryFile, merge.newFile]);
  return plan;
}

interface FileFacts {
  fileSize: number;
  checksum: string;
}

/** The manifest after the plan, given the new facts about files that changed. */
function applyPlan(manifest: Manifest, plan: PrunePlan, facts: Map<string, FileFacts & { dataBytes?: number }>): Manifest {
  const keptOrRetained = new Set([...plan.kept, ...plan.retained]);
  const mergesByTarget = new Map(plan.merges.map((merge) => [merge.target, merge]));
  const rebases = new Map(plan.rebases.map((rebase) => [rebase.file, rebase]));
  const backups = manifest.backups
    .filter((backup) => keptOrRetained.has(backup.id))
    .map((backup): BackupRecord => {
      const isMerged = plan.mergeInto?.id === backup.id;
      const disks = backup.disks.map((disk): DiskRecord => {
        const merge = isMerged ? mergesByTarget.get(disk.target) : undefined;
        if (merge) {
          const fact = facts.get(merge.newFile)!;
          return { ...disk, level: merge.level, file: merge.newFile, backingFile: merge.backingFile, fileSize: fact.fileSize, checksum: fact.checksum, dataBytes: fact.dataBytes ?? disk.dataBytes };
        }
        const rebase = rebases.get(disk.file);
        if (rebase) {
          const fact = facts.get(disk.file)!;
          return { ...disk, backingFile: rebase.to, fileSize: fact.fileSize, checksum: fact.checksum };
        }
        return disk;
      });
      if (!isMerged || plan.mergeInto === null) return { ...backup, disks };
      return { ...backup, level: plan.mergeInto.level, parent: plan.mergeInto.newParent, mergedFrom: plan.mergeInto.mergedFrom, disks };
    });
  return { ...manifest, backups };
}

function obsoleteCheckpoints(before: Manifest, after: Manifest): string[] {
  const serving = new Set<string>();
  const newest = after.backups.at(-1);
  if (newest?.checkpoint) serving.add(newest.checkpoint);
  for (const backup of after.backups) if (backup.level === 'full' && backup.checkpoint) serving.add(backup.checkpoint);
  const obsolete = before.backups.map((backup) => backup.checkpoint).filter((name): name is string => name !== null && !serving.has(name));
  return [...new Set(obsolete)];
}

async function factsOf(set: BackupSet, file: string, options: Pick<PruneOptions, 'onProgress'>): Promise<FileFacts> {
  const path = set.pathOf(file);
  const { size } = await stat(path);
  const checksum = await checksumFile(path, undefined, { onProgress: (bytes) => options.onProgress?.({ step: 'checksum', file, fraction: size === 0 ? 1 : bytes / size }) });
  return { fileSize: size, checksum };
}

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
    const exists = await stat(set.pathOf(merge.newFile)).then(() => true, () => false);
    if (exists) {
      throw new BackupSetError('RECORD_INVALID', `cannot prune: ${set.pathOf(merge.newFile)} already exists but is not part of the set; move it away`, { path: set.pathOf(merge.newFile) });
    }
  }

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
    return await finishPrune(set, plan, before, facts, options);
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

/** Steps 3 to 5: shared by prune and by recovery after a crash in the switching phase. */
async function finishPrune(
  set: BackupSet,
  plan: PrunePlan,
  before: Manifest,
  facts: Map<string, FileFacts & { dataBytes?: number }>,
  options: Pick<PruneOptions, 'onProgress' | 'hooks'>,
): Promise<PruneResult> {
  for (const rebase of plan.rebases) {
    options.onProgress?.({ step: 'rebase', file: rebase.file });
    await qemuImgRebaseUnsafe(set.pathOf(rebase.file), rebase.to);
    await fsyncFile(set.pathOf(rebase.file));
  }
  await options.hooks?.afterRebase?.();
  for (const rebase of plan.rebases) facts.set(rebase.file, await factsOf(set, rebase.file, options));
  const after = applyPlan(before, plan, facts);
  await options.hooks?.beforeManifestWrite?.();
  await set.writeManifest(after);
  await options.hooks?.afterManifestWrite?.();
  for (const file of plan.deletes) options.onProgress?.({ step: 'delete', file });
  const deletedFiles = await removeUnreferencedFiles(set.dir, [...plan.deletes, ...plan.creates], set.referencedFiles());
  await removeJournal(set.dir);
  const merged = plan.mergeInto && { id: plan.mergeInto.id, from: plan.mergeInto.mergedFrom, level: plan.mergeInto.level };
  return { kept: plan.kept, retained: plan.retained, removed: plan.removed, merged, deletedFiles, obsoleteCheckpoints: obsoleteCheckpoints(before, after) };
}

/**
 * Recovery of a prune that died in the switching phase, before its manifest was written:
 * recompute the plan from the unchanged manifest and finish it.
 */
export async function resumeInterruptedPrune(set: BackupSet, journal: RunJournalState): Promise<PruneResult> {
  const before = set.manifest as Manifest;
  const plan = planPrune(before, journal.keep ?? 0);
  const expected = [...plan.creates].sort().join('\n');
  if (expected !== [...journal.creates].sort().join('\n')) {
    throw new BackupSetError('CHAIN_BROKEN', `cannot finish the interrupted prune recorded in ${set.dir}/.in-progress.json: the set no longer matches it; check the set with verify`);
  }
  const facts = new Map<string, FileFacts & { dataBytes?: number }>();
  for (const merge of plan.merges) {
    facts.set(merge.newFile, { ...(await factsOf(set, merge.newFile, {})), dataBytes: await qemuImgOwnDataBytes(set.pathOf(merge.newFile)) });
  }
  return finishPrune(set, plan, before, facts, {});
}
