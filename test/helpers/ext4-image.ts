// Looks into an ext4 file system in a raw image file with e2fsprogs (no mount): what a
// restore of a guest's disk holds, judged by tools we did not write.
import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';

import { run, tryRun } from './process.js';

/** Whether the file system was taken with transactions still in its journal. */
export async function needsRecovery(image: string): Promise<boolean> {
  const header = await run('dumpe2fs', ['-h', image]);
  const features = /^Filesystem features:\s*(.*)$/m.exec(header)?.[1] ?? '';
  return features.split(/\s+/).includes('needs_recovery');
}

/**
 * Replays the journal the way mounting would (a crash-consistent copy of a mounted
 * file system is a file system after a power cut), and nothing else.
 */
export async function replayJournal(image: string): Promise<void> {
  const result = await tryRun('e2fsck', ['-y', '-E', 'journal_only', image]);
  // 0: nothing to do; 1: the journal was replayed ("file system errors corrected").
  if (result.code > 1) throw new Error(`e2fsck -E journal_only ${image} exited ${result.code}: ${result.stdout}${result.stderr}`);
}

/** `e2fsck -fn`: a full read-only check; code 0 means the file system is clean. */
export async function checkReadOnly(image: string): Promise<{ code: number; output: string }> {
  const result = await tryRun('e2fsck', ['-fn', image]);
  return { code: result.code, output: `${result.stdout}${result.stderr}` };
}

/** SHA-256 of every regular file in `dir` of the file system, by name (debugfs rdump). */
export async function fileChecksums(image: string, dir: string, scratch: string): Promise<Map<string, string>> {
  await mkdir(scratch, { recursive: true });
  const out = await run('debugfs', ['-R', `rdump ${dir} ${scratch}`, image]);
  const dumped = join(scratch, dir.split('/').at(-1)!);
  const names = await readdir(dumped).catch((error: Error) => {
    throw new Error(`debugfs found no ${dir} in ${image}: ${error.message} ${out}`, { cause: error });
  });
  const sums = new Map<string, string>();
  for (const name of names.sort())
    sums.set(
      name,
      createHash('sha256')
        .update(await readFile(join(dumped, name)))
        .digest('hex'),
    );
  return sums;
}

/** Whether `path` names anything in the file system (debugfs stat). */
export async function pathExists(image: string, path: string): Promise<boolean> {
  const result = await tryRun('debugfs', ['-R', `stat ${path}`, image]);
  if (/File not found by ext2_lookup/.test(result.stdout + result.stderr)) return false;
  if (result.code !== 0 || !/Inode: \d+/.test(result.stdout)) throw new Error(`debugfs stat ${path} in ${image} failed: ${result.stderr}`);
  return true;
}
