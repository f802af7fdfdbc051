import { randomBytes } from 'node:crypto';
import { open, readdir, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** Options of `writeFileAtomic()`. */
export interface AtomicWriteOptions {
  /** Default 0600: a set's files describe (or hold) a VM's disks. Applied whatever the umask. */
  mode?: number;
  /**
   * Runs after the temporary file is complete and synced, right before it replaces the
   * target. Throwing here aborts the write and leaves the target untouched; tests use it
   * to prove exactly that.
   */
  beforeRename?: (temporaryPath: string) => void | Promise<void>;
}

/**
 * Replaces `path` with `data` so that a reader (or a crash) sees either the old content
 * or the new one, never a mix: the data goes to a temporary file in the same directory
 * (rename is only atomic within one file system), is fsynced, renamed over the target,
 * and the directory is fsynced so the rename itself survives a power loss.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array, options: AtomicWriteOptions = {}): Promise<void> {
  const directory = dirname(path);
  const temporaryPath = join(directory, `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  let renamed = false;
  try {
    const mode = options.mode ?? 0o600;
    const handle = await open(temporaryPath, 'wx', mode);
    try {
      await handle.chmod(mode);
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await options.beforeRename?.(temporaryPath);
    await rename(temporaryPath, path);
    renamed = true;
    await fsyncDirectory(directory);
  } finally {
    if (!renamed) await unlink(temporaryPath).catch(() => undefined);
  }
}

/** Makes renames, creations and deletions in `directory` durable. */
export async function fsyncDirectory(directory: string): Promise<void> {
  const handle = await open(directory, 'r');
  try {
    await handle.sync();
  } catch (error) {
    // Some file systems (and some container overlays) refuse fsync on a directory;
    // there is nothing better to do there, and the data itself is already synced.
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'EINVAL' && code !== 'ENOTSUP' && code !== 'EBADF') throw error;
  } finally {
    await handle.close();
  }
}

/** Flushes a file's data to stable storage (after qemu-img wrote it, before we rename it). */
export async function fsyncFile(path: string): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** `.NAME.tmp-PID-HEX`, as `writeFileAtomic()` names its temporary files. */
const TEMPORARY_FILE = /^\.(.+)\.tmp-(\d+)-[0-9a-f]{8}$/;

/**
 * Removes the temporary files of atomic writes whose process is gone (killed between
 * writing and renaming): the caller holds the directory's lock, so no one else is
 * writing them. Files of a process that may be alive are left. Returns the names removed.
 */
export async function removeStaleTemporaryFiles(directory: string): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await readdir(directory)) {
    const match = TEMPORARY_FILE.exec(name);
    if (match === null || processMayBeAlive(Number(match[2]))) continue;
    await unlink(join(directory, name)).then(
      () => removed.push(name),
      () => undefined,
    );
  }
  return removed;
}

function processMayBeAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}
