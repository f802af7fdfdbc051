import { join } from 'node:path';
import { BackupSetError } from '../errors.js';
import { describeFsError } from '../../common/fs-errors.js';
import { FileLock } from './file-lock.js';
import { currentOwner, describeOwner, parseOwner, type ProcessOwner } from './process-liveness.js';

/** The set's lock file, which a writer holds a lock on. */
export const LOCK_FILE = '.lock';

/**
 * Exclusive write access to a set, held with flock on `.lock` (see FileLock): two runs
 * can never both own the set, and a run that dies releases it with its last breath. The
 * file names the holder so the refusal can tell the user who it is.
 */
export class SetLock {
  private constructor(
    private readonly lock: FileLock,
    readonly owner: ProcessOwner,
  ) {}

  get path(): string {
    return this.lock.path;
  }

  static async acquire(dir: string): Promise<SetLock> {
    const path = join(dir, LOCK_FILE);
    let taken: FileLock | { heldBy: string };
    try {
      taken = await FileLock.tryAcquire(path);
    } catch (error) {
      throw new BackupSetError('SET_IO', `cannot create lock file ${path}: ${describeFsError(error)}`, { path, cause: error });
    }
    if (!(taken instanceof FileLock)) {
      const holder = parseHolder(taken.heldBy);
      throw new BackupSetError(
        'SET_LOCKED',
        `backup set ${dir} is locked by another run (${holder ? describeOwner(holder) : 'holder unknown'}); wait for it to finish`,
        { path },
      );
    }
    const owner = currentOwner();
    await taken.record(`${JSON.stringify(owner)}\n`);
    return new SetLock(taken, owner);
  }

  async release(): Promise<void> {
    await this.lock.release();
  }
}

function parseHolder(text: string): ProcessOwner | undefined {
  try {
    return parseOwner(JSON.parse(text));
  } catch {
    return undefined;
  }
}
