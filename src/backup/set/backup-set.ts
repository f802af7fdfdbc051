import { chmod, mkdir, readdir, readFile, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { removeStaleTemporaryFiles, writeFileAtomic, type AtomicWriteOptions } from './atomic-file.js';
import { fileChecksumMatches } from '../checksum.js';
import { BackupSetError, throwIfAborted } from '../errors.js';
import { describeFsError, errnoCode } from '../../common/fs-errors.js';
import {
  MANIFEST_FILE,
  MANIFEST_FORMAT,
  MANIFEST_VERSION,
  assertValidManifest,
  backupFileName,
  canonicalUuid,
  parseManifest,
  serializeManifest,
  type BackupLevel,
  type BackupRecord,
  type DiskRecord,
  type DomainIdentity,
  type Manifest,
  type ManifestDomain,
} from './manifest.js';
import { readImageHeader } from '../qcow2/image-header.js';
import type { ChainLink, SetFiles } from './set-files.js';
import { recoverInterruptedRun, type RecoveryReport } from './recovery.js';
import { BackupRun, readJournal, type RunJournalState } from './run-journal.js';
import { SetLock } from './set-lock.js';

/** One file of a disk's chain, base first. */

export interface CommitOptions {
  signal?: AbortSignal;
  /**
   * Re-hash each file and compare with the record (default true). A caller that
   * hashed the files itself after writing them, under this set's lock, may skip
   * the second pass: sizes, headers and virtual sizes are still checked.
   */
  verifyChecksums?: boolean;
  /** Called as each new file is checksummed. */
  onProgress?: (progress: { file: string; bytesHashed: number; fileSize: number }) => void;
}

/**
 * A backup set on disk: one directory per domain holding manifest.json and the qcow2 files
 * it names. Opened read-only (`open`) it only reads; opened for writing (`create`,
 * `openForWrite`) it holds the set's lock and has cleaned up after any interrupted run.
 */
export class BackupSet implements SetFiles {
  private state: Manifest;
  private run: BackupRun | null = null;

  private constructor(
    readonly dir: string,
    manifest: Manifest,
    private lock: SetLock | null,
    /** The journal of a run that did not finish, as found by a read-only open. */
    readonly interruptedRun: RunJournalState | null,
    /** What opening for writing cleaned up or completed, if anything. */
    public recovery: RecoveryReport | null = null,
  ) {
    this.state = manifest;
  }

  /**
   * Creates a new, empty set in a directory that does not exist yet or is empty. A
   * directory holding anything else is refused: it may be a set whose manifest was lost
   * (its backups must not silently become orphans of a new, empty set) or not a backup
   * directory at all.
   */
  static async create(dir: string, domain: ManifestDomain): Promise<BackupSet> {
    const absolute = resolve(dir);
    const manifest = assertValidManifest(
      { format: MANIFEST_FORMAT, version: MANIFEST_VERSION, domain: { ...domain, uuid: canonicalUuid(domain.uuid) }, backups: [] },
      'new manifest',
    );
    let created: string | undefined;
    try {
      created = await makeDirectories(absolute);
    } catch (error) {
      throw new BackupSetError('SET_IO', `cannot create backup set directory ${absolute}: ${describeFsError(error)}`, { path: absolute, cause: error });
    }
    if (await exists(join(absolute, MANIFEST_FILE))) {
      throw new BackupSetError('SET_EXISTS', `${absolute} already holds a backup set (${MANIFEST_FILE} exists)`, { path: join(absolute, MANIFEST_FILE) });
    }
    await assertEmptyForNewSet(absolute);
    // Only a directory this run made is narrowed; an existing one keeps the mode its owner chose.
    if (created !== undefined) await chmod(absolute, 0o700).catch(() => undefined);
    const lock = await SetLock.acquire(absolute);
    try {
      const manifestPath = join(absolute, MANIFEST_FILE);
      if (await exists(manifestPath)) {
        throw new BackupSetError('SET_EXISTS', `${absolute} already holds a backup set (${MANIFEST_FILE} exists)`, { path: manifestPath });
      }
      await writeManifestFile(absolute, manifest);
      return new BackupSet(absolute, manifest, lock, null);
    } catch (error) {
      await lock.release();
      throw error;
    }
  }

  /** Opens a set for reading only: no lock, no cleanup, nothing on disk changes. */
  static async open(dir: string): Promise<BackupSet> {
    const absolute = resolve(dir);
    const manifest = await readManifestFile(absolute);
    return new BackupSet(absolute, manifest, null, await readJournal(absolute));
  }

  /**
   * Opens a set for writing: takes the lock, then cleans up after an interrupted run
   * (see `recovery`) so the set is consistent before anything new happens.
   */
  static async openForWrite(dir: string): Promise<BackupSet> {
    const absolute = resolve(dir);
    // Validate first: a directory that is not a set must not get a lock file.
    await readManifestFile(absolute);
    const lock = await SetLock.acquire(absolute);
    try {
      // A run killed between writing a temporary file and renaming it over its target left it.
      await removeStaleTemporaryFiles(absolute);
      const set = new BackupSet(absolute, await readManifestFile(absolute), lock, null);
      set.recovery = await recoverInterruptedRun(set);
      return set;
    } catch (error) {
      await lock.release();
      throw error;
    }
  }

  /** Opens the set for `domain` for writing, creating it when the directory has no manifest. */
  static async openOrCreate(dir: string, domain: ManifestDomain): Promise<BackupSet> {
    const absolute = resolve(dir);
    if (!(await exists(join(absolute, MANIFEST_FILE)))) return BackupSet.create(absolute, domain);
    const set = await BackupSet.openForWrite(absolute);
    try {
      set.assertDomain(domain);
    } catch (error) {
      await set.close();
      throw error;
    }
    return set;
  }

  /** Path of the set's manifest file. */
  get manifestPath(): string {
    return join(this.dir, MANIFEST_FILE);
  }

  /** The manifest as last read or written. */
  get manifest(): Readonly<Manifest> {
    return this.state;
  }

  /** The domain the set belongs to. */
  get domain(): Readonly<ManifestDomain> {
    return this.state.domain;
  }

  /** The set's backups, oldest first. */
  get backups(): readonly BackupRecord[] {
    return this.state.backups;
  }

  /** True while a run started with `beginRun` has neither committed nor aborted. */
  get runInProgress(): boolean {
    return this.run?.active === true;
  }

  /** Whether the set was opened for writing and holds its lock. */
  get writable(): boolean {
    return this.lock !== null;
  }

  /** Refuses a domain other than the set's; matched on UUID because names can be reused. */
  assertDomain(domain: DomainIdentity): void {
    const own = this.state.domain;
    if (canonicalUuid(domain.uuid) !== own.uuid) {
      throw new BackupSetError(
        'FOREIGN_DOMAIN',
        `backup set ${this.dir} belongs to domain '${own.name}' (uuid ${own.uuid}), not to '${domain.name}' (uuid ${canonicalUuid(domain.uuid)})`,
        { path: this.manifestPath },
      );
    }
  }

  /** The backup with this id; throws a `BackupSetError` when the set has none. */
  getBackup(id: string): BackupRecord {
    const found = this.state.backups.find((backup) => backup.id === id);
    if (!found) {
      const known = this.state.backups.map((backup) => backup.id).join(', ') || 'none';
      throw new BackupSetError('NOT_FOUND', `backup '${id}' is not in ${this.dir} (backups: ${known})`);
    }
    return found;
  }

  /** The newest backup, or null when the set is empty. */
  latest(): BackupRecord | null {
    return this.state.backups.at(-1) ?? null;
  }

  /** The newest full backup, or null. */
  lastFull(): BackupRecord | null {
    return this.state.backups.findLast((backup) => backup.level === 'full') ?? null;
  }

  /** Ids are never reused, even after prune, so a file name always means one backup. */
  nextId(): string {
    const last = this.latest();
    const next = last === null ? 1n : BigInt(last.id) + 1n;
    return next.toString().padStart(4, '0');
  }

  /** The file name a backup of a disk gets in the set (`<target>.<id>.<level>.qcow2`). */
  static fileName(target: string, id: string, level: BackupLevel): string {
    return backupFileName(target, id, level);
  }

  /** The absolute path of a file of the set. */
  pathOf(file: string): string {
    return join(this.dir, file);
  }

  /**
   * The backup a new backup of `level` is relative to: the latest for `inc`, the last full
   * for `diff`, null for `full`. Throws when there is none: the caller must take a full.
   */
  nextLevelParent(level: BackupLevel): BackupRecord | null {
    if (level === 'full') return null;
    const parent = level === 'inc' ? this.latest() : this.lastFull();
    if (parent === null) {
      throw new BackupSetError(
        'NOT_FOUND',
        `${this.dir} has no ${level === 'inc' ? 'backup' : 'full backup'} to take ${level === 'inc' ? 'an incremental' : 'a differential'} from; take a full backup first`,
      );
    }
    return parent;
  }

  /** The files a restore of `target` at backup `id` (default: latest) reads, base first. */
  chainFor(target: string, id?: string): ChainLink[] {
    const top = id === undefined ? this.latest() : this.getBackup(id);
    if (top === null) throw new BackupSetError('NOT_FOUND', `${this.dir} holds no backups yet`);
    const chain: ChainLink[] = [];
    let record: BackupRecord | undefined = top;
    let disk = top.disks.find((candidate) => candidate.target === target);
    if (!disk) {
      throw new BackupSetError('NOT_FOUND', `backup '${top.id}' has no disk '${target}' (disks: ${top.disks.map((candidate) => candidate.target).join(', ')})`);
    }
    while (record && disk) {
      chain.unshift({ backupId: record.id, disk, path: this.pathOf(disk.file) });
      if (disk.backingFile === null) return chain;
      // The manifest was validated: a backing file is always the parent's file for this disk.
      record = record.parent === null ? undefined : this.getBackup(record.parent);
      disk = record?.disks.find((candidate) => candidate.target === target);
    }
    throw new BackupSetError('CHAIN_BROKEN', `${this.manifestPath}: chain of ${target} at backup ${top.id} does not end in a full image`);
  }

  /** Every file the manifest names; these are never deleted except by prune. */
  referencedFiles(): Set<string> {
    return new Set(this.state.backups.flatMap((backup) => backup.disks.map((disk) => disk.file)));
  }

  /**
   * Starts a backup run: writes the in-progress journal listing `files` (basenames) before
   * any of them exists. Refuses names already present, so a run never overwrites anything.
   */
  async beginRun(files: readonly string[], details: { checkpoint?: string } = {}): Promise<BackupRun> {
    this.assertWritable();
    if (this.run?.active) throw new BackupSetError('RUN_IN_PROGRESS', `a backup run on ${this.dir} is already in progress in this process`);
    for (const file of files) {
      if (await exists(this.pathOf(file))) {
        const owner = this.referencedFiles().has(file) ? 'it belongs to a completed backup' : 'it is not part of the set; move it away';
        throw new BackupSetError('RECORD_INVALID', `${this.pathOf(file)} already exists: ${owner}`, { path: this.pathOf(file) });
      }
    }
    this.run = await BackupRun.begin(this.dir, files, () => this.referencedFiles(), details);
    return this.run;
  }

  /**
   * Appends a completed backup to the manifest. Every file is checked first (present, size,
   * checksum, qcow2 header backing pointer and virtual size) so the manifest only ever names
   * files that are complete and are what it says they are.
   */
  async commitBackup(record: BackupRecord, options: CommitOptions = {}): Promise<void> {
    this.assertWritable();
    if (record.id !== this.nextId()) throw new BackupSetError('RECORD_INVALID', `backup id '${record.id}' is not the next id '${this.nextId()}'`);
    const next: Manifest = { ...this.state, backups: [...this.state.backups, record] };
    try {
      assertValidManifest(next, `backup ${record.id}`);
    } catch (error) {
      if (error instanceof BackupSetError) throw new BackupSetError('RECORD_INVALID', `cannot commit ${error.message}`, { cause: error });
      throw error;
    }
    for (const disk of record.disks) {
      await this.checkFileMatches(disk, options);
    }
    throwIfAborted(options.signal);
    await this.writeManifest(next);
    // The backup is in the set from here on: a leftover that cannot be removed now (a
    // scratch file on a disk that just turned read-only) is the next run's to remove,
    // and must not turn a committed backup into a reported failure.
    if (this.run?.active) await this.run.finish().catch(() => undefined);
    this.run = null;
  }

  private async checkFileMatches(disk: DiskRecord, options: CommitOptions): Promise<void> {
    const path = this.pathOf(disk.file);
    const mismatch = (problem: string): BackupSetError => new BackupSetError('RECORD_INVALID', `${disk.file}: ${problem}`, { path });
    let size: number;
    try {
      size = (await stat(path)).size;
    } catch (error) {
      throw mismatch(errnoCode(error) === 'ENOENT' ? 'file is missing' : describeFsError(error));
    }
    if (size !== disk.fileSize) throw mismatch(`file is ${size} bytes, the record says ${disk.fileSize}`);
    const info = await readImageHeader(path, { signal: options.signal });
    if (info.format !== 'qcow2') throw mismatch(`is ${info.format}, not qcow2`);
    if (info.backingFilename !== disk.backingFile) {
      throw mismatch(
        `backing file in the image is ${info.backingFilename ?? 'none'}, the record says ${disk.backingFile ?? 'none'} (backing names must be plain file names)`,
      );
    }
    if (info.virtualSize !== disk.virtualSize) throw mismatch(`virtual size is ${info.virtualSize}, the record says ${disk.virtualSize}`);
    if (options.verifyChecksums === false) return;
    const { matches, actual } = await fileChecksumMatches(path, disk.checksum, {
      signal: options.signal,
      onProgress: (bytesHashed) => options.onProgress?.({ file: disk.file, bytesHashed, fileSize: disk.fileSize }),
    });
    if (!matches) throw mismatch(`checksum is ${actual}, the record says ${disk.checksum}`);
  }

  /**
   * Replaces the manifest atomically after validating it. Low level: callers (commit,
   * prune) are responsible for the files it names being complete.
   */
  async writeManifest(next: Manifest, options: AtomicWriteOptions = {}): Promise<void> {
    this.assertWritable();
    const validated = assertValidManifest(next, this.manifestPath);
    await writeManifestFile(this.dir, validated, options);
    this.state = validated;
  }

  /** Re-reads manifest.json (after another process changed it, or in tests). */
  async reload(): Promise<void> {
    this.state = await readManifestFile(this.dir);
  }

  /** Aborts a run still in progress (removing its files) and releases the lock. */
  async close(): Promise<void> {
    try {
      if (this.run?.active) await this.run.abort();
    } finally {
      this.run = null;
      const lock = this.lock;
      this.lock = null;
      await lock?.release();
    }
  }

  private assertWritable(): void {
    if (this.lock === null) throw new BackupSetError('INVALID_ARGUMENT', `backup set ${this.dir} is open read-only (or closed); use BackupSet.openForWrite`);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return false;
    throw new BackupSetError('SET_IO', `cannot access ${path}: ${describeFsError(error)}`, { path, cause: error });
  }
}

/**
 * `mkdir -p` one level at a time: Node's recursive mkdir reports ENOENT where a plain
 * mkdir says EROFS or EACCES, and the user must be told the real reason. Returns the
 * first directory created, if any.
 */
async function makeDirectories(path: string): Promise<string | undefined> {
  const missing: string[] = [];
  for (let current = path; ; current = dirname(current)) {
    const info = await stat(current).catch((error: unknown) => {
      if (errnoCode(error) === 'ENOENT') return undefined;
      throw error;
    });
    if (info !== undefined) {
      if (!info.isDirectory()) throw Object.assign(new Error(`${current} is not a directory`), { code: 'ENOTDIR' });
      break;
    }
    missing.unshift(current);
    if (dirname(current) === current) break;
  }
  for (const directory of missing) {
    try {
      await mkdir(directory, { mode: 0o700 });
    } catch (error) {
      if (errnoCode(error) !== 'EEXIST') throw error;
    }
  }
  return missing[0];
}

/** Names a fresh file system may hold that say nothing about backups. */
const IGNORABLE_IN_NEW_SET = new Set(['lost+found']);

async function assertEmptyForNewSet(dir: string): Promise<void> {
  let entries: string[];
  try {
    entries = (await readdir(dir)).filter((entry) => !IGNORABLE_IN_NEW_SET.has(entry));
  } catch (error) {
    throw new BackupSetError('SET_IO', `cannot read ${dir}: ${describeFsError(error)}`, { path: dir, cause: error });
  }
  if (entries.length === 0) return;
  const setFiles = entries.filter((entry) => /\.(?:full|inc|diff)\.qcow2$/.test(entry) || entry.startsWith('.in-progress') || entry === '.lock');
  const shown = (list: string[]) => `${list.slice(0, 3).join(', ')}${list.length > 3 ? `, and ${list.length - 3} more` : ''}`;
  if (setFiles.length > 0) {
    throw new BackupSetError(
      'NOT_A_SET',
      `${dir} holds backup files (${shown(setFiles)}) but no ${MANIFEST_FILE}: it looks like a set whose manifest was lost; refusing to start a new set over it (restore ${MANIFEST_FILE} from a copy, or move the files away)`,
      { path: dir },
    );
  }
  throw new BackupSetError(
    'NOT_A_SET',
    `${dir} is not a backup set (no ${MANIFEST_FILE}) and is not empty (${shown(entries)}); a new set needs a new or empty directory`,
    { path: dir },
  );
}

async function readManifestFile(dir: string): Promise<Manifest> {
  let info;
  try {
    info = await stat(dir);
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') throw new BackupSetError('SET_NOT_FOUND', `backup set directory ${dir} does not exist`, { path: dir, cause: error });
    throw new BackupSetError('SET_IO', `cannot access backup set directory ${dir}: ${describeFsError(error)}`, { path: dir, cause: error });
  }
  if (!info.isDirectory()) throw new BackupSetError('SET_NOT_FOUND', `${dir} is not a directory`, { path: dir });
  const path = join(dir, MANIFEST_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') throw new BackupSetError('NOT_A_SET', `${dir} is not a backup set: ${MANIFEST_FILE} is missing`, { path, cause: error });
    throw new BackupSetError('SET_IO', `cannot read ${path}: ${describeFsError(error)}`, { path, cause: error });
  }
  return parseManifest(text, path);
}

async function writeManifestFile(dir: string, manifest: Manifest, options: AtomicWriteOptions = {}): Promise<void> {
  const path = join(dir, MANIFEST_FILE);
  try {
    await writeFileAtomic(path, serializeManifest(manifest), options);
  } catch (error) {
    if (error instanceof BackupSetError) throw error;
    throw new BackupSetError('SET_IO', `cannot write ${path}: ${describeFsError(error)}`, { path, cause: error });
  }
}

export type { ChainLink } from './set-files.js';
