import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from './atomic-file.js';
import type { ChainLink } from './backup-set.js';
import { fileChecksumMatches } from '../checksum.js';
import { BackupSetError } from '../errors.js';
import { describeFsError, errnoCode } from '../../common/fs-errors.js';

/**
 * What each file looked like the last time its bytes were checked against the manifest.
 * A new backup must not build on a damaged file, but re-reading a whole chain (a
 * multi-TiB full) before every nightly incremental is not affordable: a file whose
 * size, inode, modification and change times are what they were when it last hashed
 * correctly has not been written through the file system since, so it is not re-read.
 * Damage below the file system (media errors) is `verify`'s and `restore`'s to find:
 * both always read every byte.
 */
export const VERIFIED_FILE = '.verified.json';

interface Fingerprint {
  checksum: string;
  size: string;
  ino: string;
  mtimeNs: string;
  ctimeNs: string;
}

type Records = Record<string, Fingerprint>;

async function fingerprint(path: string, checksum: string): Promise<Fingerprint> {
  const info = await stat(path, { bigint: true });
  return { checksum, size: String(info.size), ino: String(info.ino), mtimeNs: String(info.mtimeNs), ctimeNs: String(info.ctimeNs) };
}

function same(a: Fingerprint, b: Fingerprint): boolean {
  return a.checksum === b.checksum && a.size === b.size && a.ino === b.ino && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs;
}

async function load(dir: string): Promise<Records> {
  try {
    const parsed = JSON.parse(await readFile(join(dir, VERIFIED_FILE), 'utf8')) as unknown;
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return Object.create(null) as Records;
    const records = Object.create(null) as Records;
    for (const [file, value] of Object.entries(parsed as Record<string, unknown>)) {
      const entry = value as Partial<Fingerprint> | null;
      if (entry && ['checksum', 'size', 'ino', 'mtimeNs', 'ctimeNs'].every((key) => typeof (entry as Record<string, unknown>)[key] === 'string')) {
        records[file] = entry as Fingerprint;
      }
    }
    return records;
  } catch {
    // Missing or unreadable: every file is simply checked again.
    return Object.create(null) as Records;
  }
}

async function save(dir: string, records: Records, keep: ReadonlySet<string>): Promise<void> {
  const kept = Object.fromEntries(Object.entries(records).filter(([file]) => keep.has(file)));
  // A cache: failing to write it only costs a re-read next time.
  await writeFileAtomic(join(dir, VERIFIED_FILE), `${JSON.stringify(kept)}\n`, { mode: 0o600 }).catch(() => undefined);
}

/** Notes files whose bytes were just checked (or written and hashed) under the set's lock. */
export async function recordVerifiedFiles(
  dir: string,
  files: ReadonlyArray<{ file: string; checksum: string }>,
  referenced: ReadonlySet<string>,
): Promise<void> {
  const records = await load(dir);
  for (const { file, checksum } of files) records[file] = await fingerprint(join(dir, file), checksum);
  await save(dir, records, referenced);
}

/**
 * Throws CHECKSUM_MISMATCH naming the first file of `chain` whose bytes no longer match
 * the manifest; files unchanged since they last matched are not re-read (see above).
 */
export async function assertChainChecksums(
  dir: string,
  chain: readonly ChainLink[],
  referenced: ReadonlySet<string>,
  options: { signal?: AbortSignal; onHash?: (file: string) => void } = {},
): Promise<void> {
  const records = await load(dir);
  let changed = false;
  try {
    for (const link of chain) {
      const { file, checksum } = link.disk;
      let current: Fingerprint;
      try {
        current = await fingerprint(link.path, checksum);
      } catch (error) {
        throw new BackupSetError('CHAIN_BROKEN', `${file}: ${errnoCode(error) === 'ENOENT' ? 'missing' : describeFsError(error)}`, {
          path: link.path,
          cause: error,
        });
      }
      const known = records[file];
      if (known !== undefined && same(known, current)) continue;
      options.onHash?.(file);
      const { matches, actual } = await fileChecksumMatches(link.path, checksum, options.signal ? { signal: options.signal } : {});
      if (!matches) {
        throw new BackupSetError(
          'CHECKSUM_MISMATCH',
          `${file} is damaged: its checksum is ${actual}, the manifest says ${checksum}; nothing will be built on it (run verify, then start a new set or restore the file from a copy)`,
          { path: link.path },
        );
      }
      records[file] = current;
      changed = true;
    }
  } finally {
    if (changed) await save(dir, records, referenced);
  }
}
