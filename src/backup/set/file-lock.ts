import { lstat, open, stat, unlink, type FileHandle } from 'node:fs/promises';
import { nativeAddon } from '../../libvirt/native.js';
import { errnoCode } from '../../common/fs-errors.js';

/**
 * An exclusive lock on a file, held through flock(2) on an open descriptor. The kernel
 * releases it when the holder exits, however it exits (SIGKILL, a crash, a full disk
 * while writing the lock's content), so a lock can never be left behind and no run has
 * to decide whether another one is dead before taking over: that guess is what lets
 * two runs both "take over" a stale lock.
 *
 * The file's content is informational: who holds the lock (for messages), and what a
 * holder that died was doing (`previous`), so the next holder can clean up after it.
 */
export class FileLock {
  private released = false;

  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    /** The content the file had when this lock was taken: the last holder's record, '' if none. */
    readonly previous: string,
  ) {}

  /**
   * Takes the lock, or returns `{ heldBy }` with the current holder's record when
   * another open file holds it. Other failures (permissions, I/O) throw.
   */
  static async tryAcquire(path: string): Promise<FileLock | { heldBy: string }> {
    for (let attempt = 0; ; attempt += 1) {
      const handle = await open(path, 'a+', 0o600);
      let keep = false;
      try {
        if (!nativeAddon().tryLockFile(handle.fd)) return { heldBy: await readAll(handle) };
        // A releasing holder unlinks the file before closing it: if we locked a file that
        // is no longer at `path`, a newer lock may exist there; start again.
        const [held, current] = await Promise.all([handle.stat(), stat(path).catch(() => undefined)]);
        if (current === undefined || current.ino !== held.ino || current.dev !== held.dev) {
          if (attempt > 100) throw Object.assign(new Error(`cannot lock ${path}: it keeps being replaced`), { code: 'EAGAIN' });
          continue;
        }
        await handle.chmod(0o600);
        const lock = new FileLock(path, handle, await readAll(handle));
        keep = true;
        return lock;
      } finally {
        if (!keep) await handle.close();
      }
    }
  }

  /**
   * Replaces the record in the file. Best effort on a full or failing disk: the lock is
   * held by the descriptor, not by the content, so a record that cannot be written costs
   * only the detail in the next run's messages.
   */
  async record(content: string): Promise<boolean> {
    if (this.released) return false;
    try {
      await this.handle.truncate(0);
      await this.handle.write(content, 0);
      await this.handle.sync();
      return true;
    } catch (error) {
      if (['ENOSPC', 'EDQUOT', 'EROFS', 'EIO'].includes(errnoCode(error) ?? '')) return false;
      throw error;
    }
  }

  /**
   * Removes the file, then drops the lock (in that order: see tryAcquire). With
   * `keepRecord` the file stays, so the next holder finds this holder's record in
   * `previous`, as it would after a crash: for work this holder could not finish.
   */
  async release(options: { keepRecord?: boolean } = {}): Promise<void> {
    if (this.released) return;
    this.released = true;
    try {
      if (!options.keepRecord) await unlink(this.path).catch(() => undefined);
    } finally {
      await this.handle.close();
    }
  }
}

async function readAll(handle: FileHandle): Promise<string> {
  const { size } = await handle.stat();
  // The record is a line of JSON; anything bigger is not ours and is not worth reading.
  const buffer = Buffer.alloc(Math.min(size, 64 * 1024));
  const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
  return buffer.subarray(0, bytesRead).toString('utf8');
}

/** True when `path` is a directory owned by this user that nobody else can enter. */
export async function isPrivateDirectory(path: string): Promise<boolean> {
  const info = await lstat(path).catch(() => undefined);
  if (info === undefined || !info.isDirectory()) return false;
  const uid = process.getuid?.();
  return (uid === undefined || info.uid === uid) && (info.mode & 0o077) === 0;
}
