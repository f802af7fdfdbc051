import { BackupSet } from '../../backup/index.js';
import { deletePendingCheckpoints } from '../../backup/index.js';
import { addPendingCheckpoint } from '../../backup/index.js';
import { prune, type PruneResult } from '../../backup/index.js';
import { libvirtSetUserCheck } from '../../backup/index.js';
import type { Connection } from '../../index.js';
import type { Domain } from '../../index.js';
import { LibvirtError } from '../../index.js';
import type { PruneArgs } from '../args.js';
import { CliError } from '../error-report.js';
import { ExitCode } from '../exit-codes.js';
import { closeConnection, openConnection } from '../libvirt-connection.js';
import type { CommandOutput } from '../output.js';
import type { CommandContext } from './context.js';

/** Checkpoint names that prune found obsolete, and what became of each in libvirt. */
interface CheckpointOutcome {
  deleted: string[];
  alreadyGone: string[];
  /** Not deleted because the domain no longer exists. */
  orphaned: string[];
  /** Left for the next backup because the domain is shut off. */
  deferred?: string[];
}

export async function pruneCommand(args: PruneArgs, { output, signal }: CommandContext): Promise<number> {
  const set = await BackupSet.openForWrite(args.dir);
  let connection: Connection | null = null;
  try {
    reportRecovery(set, output);
    // Reach libvirt before touching files: a wrong URI or a stopped daemon must fail
    // with the set unchanged, not after old backups are gone.
    connection = await openConnection(args.uri, args);
    const domain = await findDomain(connection, set);
    if (domain === null) {
      output.event({
        type: 'notice',
        message: `domain '${set.domain.name}' (uuid ${set.domain.uuid}) no longer exists in ${args.uri}: its checkpoints cannot be deleted; pruning the files only`,
      });
    }
    const setUsers = libvirtSetUserCheck(connection);
    const result = await prune(set, {
      keep: args.keep,
      checkSetUser: setUsers.check,
      signal,
      onProgress: ({ step, file, fraction }) => output.event({ type: 'step', step, file, ...(fraction === undefined ? {} : { fraction }) }),
    });
    await setUsers.close();
    for (const stale of result.staleSetUsers ?? [])
      output.event({ type: 'notice', message: `${stale.reason}: it no longer runs from the set; its record was removed` });
    // libvirt deletes checkpoints of running domains only; a stopped one's wait in the set.
    const running = domain !== null && (await domain.isActive());
    if (running) await deletePendingCheckpoints(set, domain, (message) => output.event({ type: 'notice', message }));
    const checkpoints =
      running || domain === null
        ? await deleteCheckpoints(domain, result.obsoleteCheckpoints, output)
        : await deferCheckpoints(set, result.obsoleteCheckpoints, output);
    output.result('prune', summary(set, result, checkpoints), { dir: set.dir, ...result, checkpoints });
    return ExitCode.OK;
  } finally {
    await set.close();
    await closeConnection(connection);
  }
}

async function deferCheckpoints(set: BackupSet, names: string[], output: CommandOutput): Promise<CheckpointOutcome> {
  for (const name of names) await addPendingCheckpoint(set.dir, name, 'made obsolete by prune while the domain was shut off');
  if (names.length > 0) {
    output.event({
      type: 'notice',
      message: `domain '${set.domain.name}' is shut off: libvirt cannot delete checkpoints ${names.join(', ')} now; the next backup deletes them`,
    });
  }
  return { deleted: [], alreadyGone: [], orphaned: [], deferred: names };
}

async function findDomain(connection: Connection, set: BackupSet): Promise<Domain | null> {
  try {
    return await connection.lookupDomainByUUID(set.domain.uuid);
  } catch (error) {
    if (error instanceof LibvirtError && error.codeName === 'VIR_ERR_NO_DOMAIN') return null;
    throw error;
  }
}

async function deleteCheckpoints(domain: Domain | null, names: string[], output: CommandOutput): Promise<CheckpointOutcome> {
  const outcome: CheckpointOutcome = { deleted: [], alreadyGone: [], orphaned: [] };
  if (domain === null) {
    outcome.orphaned.push(...names);
    return outcome;
  }
  for (const name of names) {
    try {
      const checkpoint = await domain.lookupCheckpointByName(name);
      await checkpoint.delete();
      outcome.deleted.push(name);
    } catch (error) {
      if (error instanceof LibvirtError && error.codeName === 'VIR_ERR_NO_DOMAIN_CHECKPOINT') {
        outcome.alreadyGone.push(name);
        continue;
      }
      const message = error instanceof Error ? error.message : String(error);
      throw new CliError(
        'CHECKPOINT_DELETE_FAILED',
        ExitCode.FAILED,
        `the set was pruned, but checkpoint '${name}' of domain '${domain.name}' could not be deleted: ${message}${outcome.deleted.length > 0 ? ` (deleted: ${outcome.deleted.join(', ')})` : ''}`,
        { cause: error },
      );
    }
  }
  if (outcome.alreadyGone.length > 0) output.event({ type: 'notice', message: `checkpoints already gone from libvirt: ${outcome.alreadyGone.join(', ')}` });
  return outcome;
}

function reportRecovery(set: BackupSet, output: CommandOutput): void {
  const recovery = set.recovery;
  if (recovery === null) return;
  const what = recovery.completedPrune ? 'finished the interrupted prune' : `removed ${recovery.removedFiles.length} leftover file(s)`;
  output.event({
    type: 'notice',
    message: `a ${recovery.run.kind} run (pid ${recovery.run.pid}, started ${recovery.run.startedAt}) had not finished; ${what}`,
  });
}

function summary(set: BackupSet, result: PruneResult, checkpoints: CheckpointOutcome): string {
  const lines: string[] = [];
  if (result.removed.length === 0) {
    lines.push(`${set.dir}: nothing to prune (${result.kept.length} backup${result.kept.length === 1 ? '' : 's'}, keeping ${result.kept.length})`);
  } else {
    lines.push(`${set.dir}: removed backup${result.removed.length === 1 ? '' : 's'} ${result.removed.join(', ')}; kept ${result.kept.join(', ')}`);
    if (result.merged) lines.push(`  merged ${result.merged.from.join(', ')} into ${result.merged.id} (now ${result.merged.level})`);
    if (result.retained.length > 0)
      lines.push(
        `  retained full backup${result.retained.length === 1 ? '' : 's'} ${result.retained.join(', ')} (kept differentials need ${result.retained.length === 1 ? 'it' : 'them'})`,
      );
    lines.push(`  deleted ${result.deletedFiles.length} file${result.deletedFiles.length === 1 ? '' : 's'}`);
  }
  if (checkpoints.deleted.length > 0) lines.push(`  deleted checkpoint${checkpoints.deleted.length === 1 ? '' : 's'} ${checkpoints.deleted.join(', ')}`);
  if ((checkpoints.deferred?.length ?? 0) > 0) lines.push(`  checkpoints to delete at the next backup (domain shut off): ${checkpoints.deferred!.join(', ')}`);
  if (checkpoints.orphaned.length > 0) lines.push(`  checkpoints not deleted (domain gone): ${checkpoints.orphaned.join(', ')}`);
  return lines.join('\n');
}
