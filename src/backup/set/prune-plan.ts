import { BackupSetError } from '../errors.js';
import { backupFileName, type BackupLevel, type BackupRecord, type DiskRecord, type Manifest } from './manifest.js';
import type { PlannedRebase } from './run-journal.js';
import type { SetUserCheck } from './set-users.js';

/** Callbacks between prune's steps. */
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

/** One step of a prune, as `PruneOptions.onProgress` receives it. */
export interface PruneProgress {
  /** `check`: reading a file prune depends on, to compare it with its checksum first. */
  step: 'check' | 'merge' | 'rebase' | 'checksum' | 'delete';
  file: string;
  /** 0..1 within the file, when known. */
  fraction?: number;
}

/** How many restore points `prune()` keeps, and how it reports progress. */
export interface PruneOptions {
  /** Number of newest restore points to keep restorable (at least 1; the newest is always kept). */
  keep: number;
  signal?: AbortSignal;
  /** Called at each step of the prune. */
  onProgress?: (progress: PruneProgress) => void;
  /** Called between steps; tests use them to simulate crashes at each point. */
  hooks?: PruneHooks;
  /**
   * Asks libvirt whether a domain recorded as running from the set (see set-users.ts)
   * still does. Without it every record counts as in use, and prune refuses to touch
   * the files such a domain reads.
   */
  checkSetUser?: SetUserCheck;
}

/** What a prune did: the backups kept and removed, and the files deleted. */
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
  /** Records of recovered domains that no longer run from the set, removed by this prune. */
  staleSetUsers?: Array<{ domain: string; reason: string }>;
}

export interface MergeStep {
  target: string;
  oldFile: string;
  newFile: string;
  temporaryFile: string;
  /** Retained file the new file is an overlay of, or null for a standalone image. */
  backingFile: string | null;
  level: BackupLevel;
}

export interface RebaseStep extends PlannedRebase {
  backupId: string;
  target: string;
}

/** What a prune will do: the backups kept, the merges and rebases, the files deleted. */
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
  const plan: PrunePlan = {
    keep,
    kept: backups.slice(-keep).map((backup) => backup.id),
    retained: [],
    removed: [],
    mergeInto: null,
    merges: [],
    rebases: [],
    deletes: [],
    creates: [],
  };
  if (backups.length <= keep) return plan;

  const byId = new Map(backups.map((backup) => [backup.id, backup]));
  const owners = new Map<string, { backup: BackupRecord; disk: DiskRecord }>();
  for (const backup of backups) for (const disk of backup.disks) owners.set(disk.file, { backup, disk });
  const oldestKept = backups[backups.length - keep]!;
  const kept = new Set(plan.kept);
  const retained = retainedBackups(backups, kept, oldestKept, owners);

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

/** Older backups a kept backup reaches without passing through the oldest kept one: they must stay. */
function retainedBackups(
  backups: readonly BackupRecord[],
  kept: ReadonlySet<string>,
  oldestKept: BackupRecord,
  owners: ReadonlyMap<string, { backup: BackupRecord; disk: DiskRecord }>,
): Set<string> {
  const retained = new Set<string>();
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
  return retained;
}

export interface FileFacts {
  fileSize: number;
  checksum: string;
}

/** The manifest after the plan, given the new facts about files that changed. */
export function applyPlan(manifest: Manifest, plan: PrunePlan, facts: Map<string, FileFacts & { dataBytes?: number }>): Manifest {
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
          // The merged file is made anew, by qemu-img: what the backup stored no longer describes it.
          const { compression: _compression, storedBytes: _storedBytes, ...written } = disk;
          return {
            ...written,
            level: merge.level,
            file: merge.newFile,
            backingFile: merge.backingFile,
            fileSize: fact.fileSize,
            checksum: fact.checksum,
            dataBytes: fact.dataBytes ?? disk.dataBytes,
          };
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

export function obsoleteCheckpoints(before: Manifest, after: Manifest): string[] {
  const serving = new Set<string>();
  const newest = after.backups.at(-1);
  if (newest?.checkpoint) serving.add(newest.checkpoint);
  for (const backup of after.backups) if (backup.level === 'full' && backup.checkpoint) serving.add(backup.checkpoint);
  const obsolete = before.backups.map((backup) => backup.checkpoint).filter((name): name is string => name !== null && !serving.has(name));
  return [...new Set(obsolete)];
}
