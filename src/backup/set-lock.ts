import { open, readFile, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { BackupSetError, describeFsError, errnoCode } from './errors.js';
import { currentOwner, describeOwner, ownerMayBeAlive, parseOwner, type ProcessOwner } from './process-liveness.js';

export const LOCK_FILE = '.lock';

/** A lock file that is still empty this long after creation was left by a crash, not a slow writer. */
const EMPTY_LOCK_GRACE_MS = 10_000;

/**
 * Exclusive write access to a set. The lock file is created with O_EXCL so two runs can
 * never both believe they own the set; its content names the holder so the error can tell
 * the user who it is, and so a lock left by a dead process can be taken over.
 */
export class SetLock {
  private released = false;

  private constructor(
    readonly path: string,
    readonly owner: ProcessOwner,
  ) {}

  static async acquire(dir: string): Promise<SetLock> {
    const path = join(dir, LOCK_FILE);
    const owner = currentOwner();
    // Two rounds: the second one runs after a stale lock was removed.
    for (let attempt = 0; attempt < 3; attempt += 1) {
      try {
        const handle = await open(path, 'wx', 0o644);
        try {
          await handle.writeFile(`${JSON.stringify(owner)}\n`);
          await handle.sync();
        } finally {
          await handle.close();
        }
        return new SetLock(path, owner);
      } catch (error) {
        if (errnoCode(error) !== 'EEXIST') {
          throw new BackupSetError('SET_IO', `cannot create lock file ${path}: ${describeFsError(error)}`, { path, cause: error });
        }
      }
      const holder = await readHolder(path);
      if (holder === 'gone') continue;
      if (holder === 'being-written') {
        await new Promise((resolve) => setTimeout(resolve, 200));
        continue;
      }
      if (holder !== 'unreadable-stale' && ownerMayBeAlive(holder.owner)) {
        throw new BackupSetError(
          'SET_LOCKED',
          `backup set ${dir} is locked by another run (${describeOwner(holder.owner)}); if that process is gone, remove ${path}`,
          { path },
        );
      }
      // The holder is dead. Remove the lock only if it is still the one we judged stale,
      // so we do not delete a fresh lock another process took over in the meantime.
      const again = await readFile(path, 'utf8').catch(() => undefined);
      if (again === (holder === 'unreadable-stale' ? '' : holder.text)) await unlink(path).catch(() => undefined);
    }
    throw new BackupSetError('SET_LOCKED', `backup set ${dir} is locked: could not take over ${path}`, { path });
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await unlink(this.path).catch(() => undefined);
  }
}

type Holder = { owner: ProcessOwner; text: string } | 'gone' | 'being-written' | 'unreadable-stale';

async function readHolder(path: string): Promise<Holder> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return 'gone';
    throw new BackupSetError('SET_IO', `cannot read lock file ${path}: ${describeFsError(error)}`, { path, cause: error });
  }
  let owner: ProcessOwner | undefined;
  try {
    owner = parseOwner(JSON.parse(text));
  } catch {
    owner = undefined;
  }
  if (owner) return { owner, text };
  const info = await stat(path).catch(() => undefined);
  if (!info) return 'gone';
  if (text === '' && Date.now() - info.mtimeMs < EMPTY_LOCK_GRACE_MS) return 'being-written';
  if (text === '') return 'unreadable-stale';
  throw new BackupSetError('SET_LOCKED', `lock file ${path} holds something unexpected; remove it if no backup is running`, { path });
}
