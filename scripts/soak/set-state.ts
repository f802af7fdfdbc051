// What the backup set on disk looks like from outside: manifest.json as bytes and
// as parsed by the product's own validator, and every other entry of the directory.
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';

import { parseManifest, type BackupRecord, type Manifest } from '../../src/backup/index.js';

export interface ManifestSnapshot {
  /** null when there is no manifest.json yet. */
  bytes: Buffer | null;
  manifest: Manifest | null;
  /** Why the bytes are not a valid manifest, if they are not. */
  invalid?: string;
}

export async function readManifest(setDir: string): Promise<ManifestSnapshot> {
  let bytes: Buffer;
  try {
    bytes = await readFile(join(setDir, 'manifest.json'));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { bytes: null, manifest: null };
    throw error;
  }
  try {
    return { bytes, manifest: parseManifest(bytes.toString('utf8')) };
  } catch (error) {
    return { bytes, manifest: null, invalid: (error as Error).message };
  }
}

export type ManifestChange = { kind: 'unchanged' } | { kind: 'one-more'; added: BackupRecord } | { kind: 'wrong'; why: string };

/**
 * The backups `after` has beyond `before`, provided every old backup is still there
 * unchanged; otherwise why not. (Whether their files are complete is what `verify` checks.)
 */
export function addedBackups(before: ManifestSnapshot, after: ManifestSnapshot): { added: BackupRecord[] } | { wrong: string } {
  if (before.bytes !== null && after.bytes !== null && before.bytes.equals(after.bytes)) return { added: [] };
  if (after.bytes === null) return before.bytes === null ? { added: [] } : { wrong: 'manifest.json disappeared' };
  if (after.manifest === null) return { wrong: `manifest.json is not valid: ${after.invalid}` };
  const old = before.manifest?.backups ?? [];
  const now = after.manifest.backups;
  if (now.length < old.length) return { wrong: `${now.length} backups, before ${old.length}` };
  for (const [index, record] of old.entries()) {
    if (!isDeepStrictEqual(now[index], record)) return { wrong: `backup ${record.id} changed` };
  }
  return { added: now.slice(old.length) };
}

/** "The old manifest or a complete new one", for a run that adds at most one backup. */
export function manifestChange(before: ManifestSnapshot, after: ManifestSnapshot): ManifestChange {
  const result = addedBackups(before, after);
  if ('wrong' in result) return { kind: 'wrong', why: result.wrong };
  if (result.added.length === 0) return { kind: 'unchanged' };
  if (result.added.length > 1) return { kind: 'wrong', why: `${result.added.length} backups added` };
  return { kind: 'one-more', added: result.added[0]! };
}

export function referencedFiles(manifest: Manifest | null): Set<string> {
  return new Set((manifest?.backups ?? []).flatMap((backup) => backup.disks.map((disk) => disk.file)));
}

export function checkpointsNamed(manifest: Manifest | null): Set<string> {
  return new Set((manifest?.backups ?? []).map((backup) => backup.checkpoint).filter((name): name is string => name !== null));
}

/**
 * State that a set keeps between runs on purpose, and when it is fine to find it.
 * `libvirtOwed`: the run could not clean up in libvirt, so a list of checkpoints still
 * to delete is expected.
 */
const PERSISTENT_ENTRIES: Record<string, (path: string, libvirtOwed: boolean) => Promise<boolean>> = {
  // Checkpoints a run could not delete yet (libvirt unreachable, domain shut off); once a
  // run could reach a running domain there must be none left.
  '.pending-checkpoints.json': async (path, libvirtOwed) => {
    if (libvirtOwed) return true;
    const listed = (JSON.parse(await readFile(path, 'utf8')) as { checkpoints?: unknown[] }).checkpoints;
    return Array.isArray(listed) && listed.length === 0;
  },
  // A cache of when each file last matched its checksum.
  '.verified.json': async (path) => {
    const parsed = JSON.parse(await readFile(path, 'utf8')) as unknown;
    return typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed);
  },
};

/**
 * The run journal and the files it lists, when the run could not know whether its libvirt
 * job had ended (libvirtd gone): QEMU may still write those files (pull scratch, push
 * targets), so they are left for the next run, which ends the job before removing them.
 */
async function journalEntries(setDir: string): Promise<Set<string>> {
  const text = await readFile(join(setDir, '.in-progress.json'), 'utf8').catch(() => null);
  if (text === null) return new Set();
  const creates = (JSON.parse(text) as { creates?: unknown }).creates;
  return new Set(['.in-progress.json', ...(Array.isArray(creates) ? creates.filter((name): name is string => typeof name === 'string') : [])]);
}

/**
 * Entries of the set directory other than manifest.json, the files it references and the
 * set's own persistent state. `jobMayRun`: the journal of a run whose job may still run,
 * and what it lists, are expected too.
 */
export async function unexpectedEntries(
  setDir: string,
  manifest: Manifest | null,
  options: { libvirtOwed?: boolean; jobMayRun?: boolean } = {},
): Promise<string[]> {
  const referenced = referencedFiles(manifest);
  const owed = options.jobMayRun ? await journalEntries(setDir) : new Set<string>();
  const unexpected: string[] = [];
  for (const entry of (await readdir(setDir)).sort()) {
    if (entry === 'manifest.json' || referenced.has(entry) || owed.has(entry)) continue;
    const persistent = PERSISTENT_ENTRIES[entry];
    if (persistent && (await persistent(join(setDir, entry), options.libvirtOwed === true).catch(() => false))) continue;
    unexpected.push(entry);
  }
  return unexpected;
}

/** Permission bits of every file the manifest references. */
export async function fileModes(setDir: string, manifest: Manifest | null): Promise<Map<string, number>> {
  const modes = new Map<string, number>();
  for (const file of referencedFiles(manifest)) {
    const info = await stat(join(setDir, file)).catch(() => undefined);
    if (info) modes.set(file, info.mode & 0o7777);
  }
  return modes;
}
