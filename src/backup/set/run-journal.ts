import { readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncDirectory, writeFileAtomic } from './atomic-file.js';
import { BackupSetError } from '../errors.js';
import { describeFsError, errnoCode } from '../../common/fs-errors.js';
import { currentOwner, parseOwner, type ProcessOwner } from './process-liveness.js';

/**
 * The in-progress journal records, before a run creates its first file, every file that
 * run may create. It is what lets an aborted or crashed run be undone precisely: cleanup
 * removes exactly the listed files, and only those the manifest does not reference, so a
 * completed backup is never touched whatever state the run died in.
 */

export const JOURNAL_FILE = '.in-progress.json';
const JOURNAL_FORMAT = 'libvirt-backup-run';

/**
 * Prune goes through phases with different recovery rules:
 * - `merging`: only new files exist; recovery deletes them.
 * - `switching`: kept files' headers are being rebased onto the new files; recovery finishes
 *   the prune (rebases again, writes the manifest) because a header already rewritten cannot
 *   be trusted to return to its recorded checksum.
 * - `deleting`: the manifest is written; recovery deletes what it no longer references.
 */
export type PrunePhase = 'merging' | 'switching' | 'deleting';

export interface PlannedRebase {
  /** The kept file whose header changes. */
  file: string;
  from: string;
  to: string;
}

/** The journal of a run in progress (`.in-progress.json`): what it may create and delete, so that an interrupted run can be cleaned up. */
export interface RunJournalState extends ProcessOwner {
  kind: 'backup' | 'prune';
  /** Files the run may create (final and temporary names); all basenames in the set directory. */
  creates: string[];
  /** Files the run means to delete once the manifest no longer references them. */
  deletes: string[];
  phase?: PrunePhase;
  /**
   * The checkpoint a backup run has libvirt create with its job, recorded before the job
   * starts: if the run dies, recovery hands it on to be deleted (see pending-checkpoints).
   */
  checkpoint?: string;
  /** The `keep` the prune was started with, so recovery can recompute the same plan. */
  keep?: number;
  rebases?: PlannedRebase[];
}

export function journalPath(dir: string): string {
  return join(dir, JOURNAL_FILE);
}

function assertPlainName(name: string): void {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw new BackupSetError('INVALID_ARGUMENT', `'${name}' is not a file name inside the backup set directory`);
  }
}

export async function readJournal(dir: string): Promise<RunJournalState | null> {
  const path = journalPath(dir);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return null;
    throw new BackupSetError('SET_IO', `cannot read ${path}: ${describeFsError(error)}`, { path, cause: error });
  }
  const invalid = (problem: string): BackupSetError =>
    new BackupSetError('MANIFEST_INVALID', `${path}: ${problem}; remove it after checking no backup is running`, { path });
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw invalid('not valid JSON');
  }
  const record = parsed as Record<string, unknown>;
  const owner = parseOwner(parsed);
  if (!owner || record['format'] !== JOURNAL_FORMAT) throw invalid('not a libvirt-backup run journal');
  const kind = record['kind'];
  if (kind !== 'backup' && kind !== 'prune') throw invalid(`unknown run kind ${JSON.stringify(kind)}`);
  const names = (key: string): string[] => {
    const value = record[key] ?? [];
    if (!Array.isArray(value) || value.some((name) => typeof name !== 'string' || name.includes('/'))) throw invalid(`${key} must be a list of file names`);
    return value as string[];
  };
  const state: RunJournalState = { ...owner, kind, creates: names('creates'), deletes: names('deletes') };
  const checkpoint = record['checkpoint'];
  if (checkpoint !== undefined) {
    if (typeof checkpoint !== 'string' || checkpoint === '') throw invalid('checkpoint must be a checkpoint name');
    state.checkpoint = checkpoint;
  }
  if (kind === 'prune') {
    const phase = record['phase'];
    if (phase !== 'merging' && phase !== 'switching' && phase !== 'deleting') throw invalid(`unknown prune phase ${JSON.stringify(phase)}`);
    const keep = record['keep'];
    if (typeof keep !== 'number' || !Number.isSafeInteger(keep) || keep < 1) throw invalid('keep must be a positive integer');
    const rebases = record['rebases'] ?? [];
    if (!Array.isArray(rebases)) throw invalid('rebases must be a list');
    state.phase = phase;
    state.keep = keep;
    state.rebases = rebases.map((entry: unknown) => {
      const { file, from, to } = (entry ?? {}) as Record<string, unknown>;
      if (typeof file !== 'string' || typeof from !== 'string' || typeof to !== 'string') throw invalid('rebases entries need file, from and to');
      return { file, from, to };
    });
  }
  return state;
}

export async function writeJournal(dir: string, state: RunJournalState): Promise<void> {
  for (const name of [...state.creates, ...state.deletes]) assertPlainName(name);
  await writeFileAtomic(journalPath(dir), `${JSON.stringify({ format: JOURNAL_FORMAT, ...state }, null, 2)}\n`);
}

export async function removeJournal(dir: string): Promise<void> {
  try {
    await unlink(journalPath(dir));
  } catch (error) {
    if (errnoCode(error) !== 'ENOENT') throw error;
  }
  await fsyncDirectory(dir);
}

/**
 * Deletes the journal's files that the manifest does not reference, returning the names
 * actually removed. Files in `referenced` are never touched, whatever the journal says.
 */
export async function removeUnreferencedFiles(dir: string, names: Iterable<string>, referenced: ReadonlySet<string>): Promise<string[]> {
  const removed: string[] = [];
  for (const name of new Set(names)) {
    if (referenced.has(name)) continue;
    assertPlainName(name);
    try {
      await unlink(join(dir, name));
      removed.push(name);
    } catch (error) {
      if (errnoCode(error) !== 'ENOENT') {
        throw new BackupSetError('SET_IO', `cannot remove ${join(dir, name)}: ${describeFsError(error)}`, { path: join(dir, name), cause: error });
      }
    }
  }
  if (removed.length > 0) await fsyncDirectory(dir);
  return removed;
}

/**
 * The journal of one backup run, as seen by the code doing the run. Obtain it from
 * `BackupSet.beginRun`, which holds the set's lock; files must be listed here before
 * they are created.
 */
export class BackupRun {
  private finished = false;

  constructor(
    readonly dir: string,
    private state: RunJournalState,
    private readonly referencedFiles: () => ReadonlySet<string>,
  ) {}

  /** Starts a backup run: writes the journal that names the files it may create, before any is created. */
  static async begin(
    dir: string,
    files: readonly string[],
    referencedFiles: () => ReadonlySet<string>,
    details: { checkpoint?: string } = {},
  ): Promise<BackupRun> {
    const state: RunJournalState = { ...currentOwner(), kind: 'backup', creates: [...files], deletes: [], ...details };
    await writeJournal(dir, state);
    return new BackupRun(dir, state, referencedFiles);
  }

  /** The files the run may create. */
  get files(): readonly string[] {
    return this.state.creates;
  }

  /** Whether the run is still going (neither committed nor abandoned). */
  get active(): boolean {
    return !this.finished;
  }

  /** Adds files to the journal; call before creating them. */
  async addFiles(files: readonly string[]): Promise<void> {
    this.assertActive();
    this.state = { ...this.state, creates: [...new Set([...this.state.creates, ...files])] };
    await writeJournal(this.dir, this.state);
  }

  /**
   * Removes this run's files (those not referenced by the manifest) and the journal. Tried
   * once: when a file cannot be removed (a read-only or failing disk) the journal stays for
   * the next run's recovery, and trying again would only repeat the error over the one
   * that made the run stop.
   */
  async abort(): Promise<string[]> {
    if (this.finished) return [];
    this.finished = true;
    const removed = await removeUnreferencedFiles(this.dir, this.state.creates, this.referencedFiles());
    await removeJournal(this.dir);
    return removed;
  }

  /**
   * Ends the run without its backup, leaving `files` to the next run: files something
   * outside this process may still be writing (a libvirt job that could not be ended).
   * The other files go; the journal then lists only `files`, so the next run's recovery
   * removes them after that run has ended the job. Best effort: if anything fails, the
   * journal keeps listing every file of the run, which is as safe.
   */
  async keepForNextRun(files: readonly string[]): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    const kept = new Set(files);
    try {
      await removeUnreferencedFiles(
        this.dir,
        this.state.creates.filter((file) => !kept.has(file)),
        this.referencedFiles(),
      );
      this.state = { ...this.state, creates: this.state.creates.filter((file) => kept.has(file)) };
      await writeJournal(this.dir, this.state);
    } catch {
      // The journal still lists the files; recovery does the rest.
    }
  }

  /**
   * Called once the manifest references the run's backup: leftovers go, then the journal.
   * The same as `abort()`: what the manifest references is exactly what stays.
   */
  finish(): Promise<string[]> {
    return this.abort();
  }

  private assertActive(): void {
    if (this.finished) throw new BackupSetError('INVALID_ARGUMENT', 'this backup run has already finished');
  }
}
