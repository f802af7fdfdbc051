import { stat } from 'node:fs/promises';
import { checksumFile } from '../checksum.js';
import { BackupSetError } from '../errors.js';
import { qemuImgOwnDataBytes, qemuImgRebaseUnsafe } from '../qcow2/qemu-img.js';
import { fsyncFile } from './atomic-file.js';
import type { Manifest } from './manifest.js';
import { applyPlan, obsoleteCheckpoints, planPrune, type FileFacts, type PruneOptions, type PrunePlan, type PruneResult } from './prune-plan.js';
import { removeJournal, removeUnreferencedFiles, type RunJournalState } from './run-journal.js';
import type { SetFiles } from './set-files.js';

export async function factsOf(set: SetFiles, file: string, options: Pick<PruneOptions, 'onProgress'>): Promise<FileFacts> {
  const path = set.pathOf(file);
  const { size } = await stat(path);
  const checksum = await checksumFile(path, undefined, {
    onProgress: (bytes) => options.onProgress?.({ step: 'checksum', file, fraction: size === 0 ? 1 : bytes / size }),
  });
  return { fileSize: size, checksum };
}

/** Steps 3 to 5: shared by prune and by recovery after a crash in the switching phase. */
export async function finishPrune(
  set: SetFiles,
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
export async function resumeInterruptedPrune(set: SetFiles, journal: RunJournalState): Promise<PruneResult> {
  const before = set.manifest as Manifest;
  const plan = planPrune(before, journal.keep ?? 0);
  const expected = [...plan.creates].sort().join('\n');
  if (expected !== [...journal.creates].sort().join('\n')) {
    throw new BackupSetError(
      'CHAIN_BROKEN',
      `cannot finish the interrupted prune recorded in ${set.dir}/.in-progress.json: the set no longer matches it; check the set with verify`,
    );
  }
  const facts = new Map<string, FileFacts & { dataBytes?: number }>();
  for (const merge of plan.merges) {
    facts.set(merge.newFile, { ...(await factsOf(set, merge.newFile, {})), dataBytes: await qemuImgOwnDataBytes(set.pathOf(merge.newFile)) });
  }
  return finishPrune(set, plan, before, facts, {});
}
