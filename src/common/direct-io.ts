import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

/**
 * `file` opened again with O_DIRECT, or null where its file system refuses that (tmpfs).
 * The native file writer sends the aligned writes through it, straight to the disk: no
 * CPU spent copying the data into the page cache and writing it back, and nothing of it
 * left cached. Reopening the open file (not its path) cannot reach another file.
 */
export async function openDirect(file: FileHandle): Promise<FileHandle | null> {
  try {
    return await open(`/proc/self/fd/${file.fd}`, constants.O_WRONLY | constants.O_DIRECT);
  } catch {
    return null;
  }
}
