import { CHECKSUM_PATTERN } from '../checksum.js';
import { BackupSetError } from '../errors.js';

/**
 * The manifest is the single source of truth of a backup set: a file on disk belongs to
 * the set only if the manifest names it. It is plain, versioned JSON so that other tools
 * (and people) can read it, and it is validated strictly on every read so that a damaged
 * or foreign file is refused before anything acts on it.
 */

export const MANIFEST_FILE = 'manifest.json';
/** The manifest's `format` field, which tells a backup set's manifest from any other JSON file. */
export const MANIFEST_FORMAT = 'libvirt-backup-set';
/**
 * Bump when a reader of the previous version would misread the new content.
 * 2: disks carry `checksum` (`xxh128:...` or `sha256:...`) instead of version 1's `sha256`.
 * Version 1 manifests are read (their checksums become `sha256:...`) and written back as 2.
 */
export const MANIFEST_VERSION = 2;

/** Full, incremental (since the previous backup) or differential (since the last full). */
export type BackupLevel = 'full' | 'inc' | 'diff';
/** Pull: we read the data over NBD; push: the hypervisor writes it. */
export type BackupTransport = 'pull' | 'push';

/** A domain as the set knows it: name and UUID. */
export interface DomainIdentity {
  name: string;
  /** Canonical lowercase UUID; the set is matched to a domain by this, never by name. */
  uuid: string;
}

/** The domain a set belongs to, with its definition when the set was created. */
export interface ManifestDomain extends DomainIdentity {
  /** The domain XML at the time the set was created (inactive definition, for re-creation). */
  xml: string;
}

/** One disk's file in a backup. */
export interface DiskRecord {
  /** libvirt target name (`vda`); also the first part of the file name. */
  target: string;
  /** Format of the domain's disk (`qcow2`, `raw`, ...); only qcow2 sources can carry bitmaps. */
  sourceFormat: string;
  /**
   * What this file holds: `full` = standalone image (no backing file), `inc`/`diff` =
   * changes relative to `backingFile`. A disk that cannot track changes is `full` even in
   * an `inc` backup. A non-full disk level always equals its backup's level.
   */
  level: BackupLevel;
  /** qcow2 file name, relative to the set directory. */
  file: string;
  /** The backing file named in the qcow2 header, relative to the set directory; null for full. */
  backingFile: string | null;
  /** Guest-visible disk size in bytes. */
  virtualSize: number;
  /** Size of `file` in bytes, as checked at commit. */
  fileSize: number;
  /** Bytes of guest data actually copied by this backup. */
  dataBytes: number;
  /** Checksum of the file's bytes: `xxh128:<32 hex>` (as `xxhsum -H2` prints it) or `sha256:<64 hex>`. */
  checksum: string;
  /** How the backup compressed the file's clusters (qcow2 compressed clusters); absent: stored plain. */
  compression?: DiskCompression;
  /**
   * Bytes the file holds, when fewer than `fileSize`: a compressed file leaves the room its
   * clusters saved as a hole. Absent: `fileSize`.
   */
  storedBytes?: number;
}

/** qcow2's two compression types. */
export type DiskCompression = 'zstd' | 'zlib';
const DISK_COMPRESSIONS: readonly DiskCompression[] = ['zstd', 'zlib'];

/** One backup (restore point) in the manifest. */
export interface BackupRecord {
  /** Zero-padded decimal sequence (`0001`), increasing through the set, never reused. */
  id: string;
  level: BackupLevel;
  transport: BackupTransport;
  /** ISO 8601 timestamps. */
  startedAt: string;
  completedAt: string;
  /** Name of the libvirt checkpoint created with this backup, if any. */
  checkpoint: string | null;
  /** That checkpoint's XML, kept so it can be redefined after a host loses it. */
  checkpointXml: string | null;
  /**
   * The backup this one is relative to: for `inc` the immediately preceding backup, for
   * `diff` a full backup; null for `full`.
   */
  parent: string | null;
  /**
   * Ids of older backups whose data prune folded into this one's files. Absent when the
   * backup is as it was written.
   */
  mergedFrom?: string[];
  /**
   * Whether the guest's file systems were frozen through its agent while the backup's job
   * started (a guest-consistent point) or not (crash-consistent). Absent in backups
   * written before it was recorded, which were not.
   */
  quiesced?: boolean;
  disks: DiskRecord[];
}

/** The set's `manifest.json`: its domain and its backups, in order. */
export interface Manifest {
  format: typeof MANIFEST_FORMAT;
  version: typeof MANIFEST_VERSION;
  domain: ManifestDomain;
  /** In increasing id order. */
  backups: BackupRecord[];
}

const BACKUP_LEVELS: readonly BackupLevel[] = ['full', 'inc', 'diff'];
const TRANSPORTS: readonly BackupTransport[] = ['pull', 'push'];
/** Twenty digits outlast any schedule, and keep BigInt() of an id cheap (a million digits take most of a second). */
const ID_PATTERN = /^\d{4,20}$/;
const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const SHA256_PATTERN = /^[0-9a-f]{64}$/;
/** Targets become part of file names; libvirt's are like vda, sdb, hdc. */
const TARGET_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
/** Longest file name Linux file systems take (NAME_MAX), in bytes. */
const MAX_FILE_NAME_BYTES = 255;
/** Values quoted in messages are cut to this many characters: a message names, it does not copy. */
const MAX_QUOTED = 60;
const PLAIN_KEY = /^[A-Za-z_$][\w$]*$/;
const ISO_TIME_PATTERN = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

/** Raised with the path of the first field that is wrong, e.g. `backups[2].disks[0].checksum`. */
class FieldError extends Error {
  constructor(
    readonly fieldPath: string,
    readonly problem: string,
  ) {
    super(fieldPath === '' ? problem : `${fieldPath}: ${problem}`);
  }
}

type Json = unknown;

function quote(text: string): string {
  return JSON.stringify(text.length > MAX_QUOTED ? `${text.slice(0, MAX_QUOTED)}…` : text);
}

function describe(value: Json): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return `string ${quote(value)}`;
  return typeof value === 'object' ? 'an object' : `${typeof value} ${JSON.stringify(value)}`;
}

function object(value: Json, at: string, allowed: readonly string[]): Record<string, Json> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new FieldError(at, `must be an object, found ${describe(value)}`);
  }
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) throw new FieldError(join(at, key), 'unknown field');
  }
  return value as Record<string, Json>;
}

/** `backups[0].disks`; a key that is not a plain name is quoted, so the path stays readable: `backups[0]["a b"]`. */
function join(at: string, key: string): string {
  if (!PLAIN_KEY.test(key)) return `${at}[${quote(key)}]`;
  return at === '' ? key : `${at}.${key}`;
}

function field(record: Record<string, Json>, at: string, key: string): Json {
  // Own properties only: whatever Object.prototype carries is not in the file.
  if (!Object.hasOwn(record, key)) throw new FieldError(join(at, key), 'is missing');
  return record[key];
}

function string(record: Record<string, Json>, at: string, key: string, check?: (value: string) => string | undefined): string {
  const value = field(record, at, key);
  if (typeof value !== 'string') throw new FieldError(join(at, key), `must be a string, found ${describe(value)}`);
  const problem = check?.(value);
  if (problem) throw new FieldError(join(at, key), problem);
  return value;
}

function nullableString(record: Record<string, Json>, at: string, key: string, check?: (value: string) => string | undefined): string | null {
  const value = field(record, at, key);
  if (value === null) return null;
  if (typeof value !== 'string') throw new FieldError(join(at, key), `must be a string or null, found ${describe(value)}`);
  const problem = check?.(value);
  if (problem) throw new FieldError(join(at, key), problem);
  return value;
}

function size(record: Record<string, Json>, at: string, key: string): number {
  const value = field(record, at, key);
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new FieldError(join(at, key), `must be a non-negative integer, found ${describe(value)}`);
  }
  // -0 (which JSON can spell) would be written back as 0.
  return value === 0 ? 0 : value;
}

function oneOf<T extends string>(record: Record<string, Json>, at: string, key: string, choices: readonly T[]): T {
  const value = field(record, at, key);
  if (typeof value !== 'string' || !(choices as readonly string[]).includes(value)) {
    throw new FieldError(join(at, key), `must be one of ${choices.map((choice) => `'${choice}'`).join(', ')}, found ${describe(value)}`);
  }
  return value as T;
}

const nonEmpty = (value: string): string | undefined => (value === '' ? 'must not be empty' : undefined);

/**
 * A plain name inside the set directory: never a path that could point elsewhere, never
 * one of our hidden temporaries (they start with a dot), nothing a terminal or a log
 * line would mangle, and short enough for the file system.
 */
export function fileNameProblem(value: string): string | undefined {
  if (value === '' || value === '.' || value === '..') return 'must be a file name';
  if (value.includes('/') || value.includes('\\') || value.includes('\0')) return 'must be a file name in the set directory, not a path';
  if (/[\u0001-\u001f\u007f]/.test(value)) return 'must not contain control characters';
  if (value.startsWith('.')) return 'must not start with a dot';
  if (!value.endsWith('.qcow2')) return "must end with '.qcow2'";
  if (Buffer.byteLength(value, 'utf8') > MAX_FILE_NAME_BYTES) return `must be at most ${MAX_FILE_NAME_BYTES} bytes long`;
  return undefined;
}

function isoTime(value: string): string | undefined {
  return ISO_TIME_PATTERN.test(value) && !Number.isNaN(Date.parse(value)) ? undefined : 'must be an ISO 8601 time like 2024-05-01T02:00:00.000Z';
}

export function idProblem(value: string): string | undefined {
  return ID_PATTERN.test(value) ? undefined : "must be a zero-padded number of 4 to 20 digits, like '0001'";
}

function validateDomain(value: Json): ManifestDomain {
  const at = 'domain';
  const domain = object(value, at, ['name', 'uuid', 'xml']);
  return {
    name: string(domain, at, 'name', nonEmpty),
    uuid: string(domain, at, 'uuid', (uuid) => (UUID_PATTERN.test(uuid) ? undefined : 'must be a lowercase UUID like 4dea22b3-1d52-d8f3-2516-782e98ab3fa0')),
    xml: string(domain, at, 'xml', nonEmpty),
  };
}

function validateDisk(value: Json, at: string, version: number): DiskRecord {
  const checksumKey = version === 1 ? 'sha256' : 'checksum';
  const disk = object(value, at, [
    'target',
    'sourceFormat',
    'level',
    'file',
    'backingFile',
    'virtualSize',
    'fileSize',
    'dataBytes',
    checksumKey,
    'compression',
    'storedBytes',
  ]);
  const result: DiskRecord = {
    target: string(disk, at, 'target', (target) =>
      TARGET_PATTERN.test(target) ? undefined : 'must be a disk target name like vda (up to 64 letters, digits, _ and -)',
    ),
    sourceFormat: string(disk, at, 'sourceFormat', nonEmpty),
    level: oneOf(disk, at, 'level', BACKUP_LEVELS),
    file: string(disk, at, 'file', fileNameProblem),
    backingFile: nullableString(disk, at, 'backingFile', fileNameProblem),
    virtualSize: size(disk, at, 'virtualSize'),
    fileSize: size(disk, at, 'fileSize'),
    dataBytes: size(disk, at, 'dataBytes'),
    checksum:
      version === 1
        ? `sha256:${string(disk, at, 'sha256', (sha) => (SHA256_PATTERN.test(sha) ? undefined : 'must be 64 hex characters (lowercase)'))}`
        : string(disk, at, 'checksum', (sum) => (CHECKSUM_PATTERN.test(sum) ? undefined : 'must be xxh128: and 32 lowercase hex digits, or sha256: and 64')),
  };
  if (Object.hasOwn(disk, 'compression')) result.compression = oneOf(disk, at, 'compression', DISK_COMPRESSIONS);
  if (Object.hasOwn(disk, 'storedBytes')) {
    result.storedBytes = size(disk, at, 'storedBytes');
    if (result.storedBytes > result.fileSize) throw new FieldError(`${at}.storedBytes`, `must not be more than fileSize (${result.fileSize})`);
  }
  if (result.level === 'full' && result.backingFile !== null) throw new FieldError(`${at}.backingFile`, 'must be null for a full disk image');
  if (result.level !== 'full' && result.backingFile === null)
    throw new FieldError(`${at}.backingFile`, `must name the backing file of an ${result.level} disk image`);
  if (result.file === result.backingFile) throw new FieldError(`${at}.backingFile`, 'must not be the file itself');
  return result;
}

function validateBackup(value: Json, at: string, version: number): BackupRecord {
  const backup = object(value, at, [
    'id',
    'level',
    'transport',
    'startedAt',
    'completedAt',
    'checkpoint',
    'checkpointXml',
    'parent',
    'mergedFrom',
    'quiesced',
    'disks',
  ]);
  const record: BackupRecord = {
    id: string(backup, at, 'id', idProblem),
    level: oneOf(backup, at, 'level', BACKUP_LEVELS),
    transport: oneOf(backup, at, 'transport', TRANSPORTS),
    startedAt: string(backup, at, 'startedAt', isoTime),
    completedAt: string(backup, at, 'completedAt', isoTime),
    checkpoint: nullableString(backup, at, 'checkpoint', nonEmpty),
    checkpointXml: nullableString(backup, at, 'checkpointXml', nonEmpty),
    parent: nullableString(backup, at, 'parent', idProblem),
    disks: [],
  };
  if (Object.hasOwn(backup, 'mergedFrom')) {
    const merged = backup['mergedFrom'];
    if (!Array.isArray(merged) || merged.length === 0) throw new FieldError(`${at}.mergedFrom`, 'must be a non-empty array of backup ids when present');
    record.mergedFrom = merged.map((id: Json, index) => {
      if (typeof id !== 'string' || idProblem(id)) throw new FieldError(`${at}.mergedFrom[${index}]`, 'must be a backup id');
      return id;
    });
  }
  if (Object.hasOwn(backup, 'quiesced')) {
    const quiesced = backup['quiesced'];
    if (typeof quiesced !== 'boolean') throw new FieldError(`${at}.quiesced`, `must be true or false when present, found ${describe(quiesced)}`);
    record.quiesced = quiesced;
  }
  if (Date.parse(record.completedAt) < Date.parse(record.startedAt)) throw new FieldError(`${at}.completedAt`, 'must not be before startedAt');
  if (record.checkpointXml !== null && record.checkpoint === null) throw new FieldError(`${at}.checkpointXml`, 'must be null when checkpoint is null');
  if (record.level === 'full' && record.parent !== null) throw new FieldError(`${at}.parent`, 'must be null for a full backup');
  if (record.level !== 'full' && record.parent === null) throw new FieldError(`${at}.parent`, `must name the backup an ${record.level} backup is relative to`);
  const disks = field(backup, at, 'disks');
  if (!Array.isArray(disks) || disks.length === 0) throw new FieldError(`${at}.disks`, 'must be a non-empty array');
  const targets = new Set<string>();
  disks.forEach((disk: Json, index) => {
    const diskAt = `${at}.disks[${index}]`;
    const parsed = validateDisk(disk, diskAt, version);
    if (targets.has(parsed.target)) throw new FieldError(`${diskAt}.target`, `duplicate target '${parsed.target}'`);
    targets.add(parsed.target);
    if (parsed.level !== 'full' && parsed.level !== record.level) {
      throw new FieldError(`${diskAt}.level`, `must be 'full' or the backup's level '${record.level}'`);
    }
    record.disks.push(parsed);
  });
  return record;
}

/** Checks how backups refer to each other: order, parents, and backing files. */
function validateRelations(backups: BackupRecord[]): void {
  const byId = new Map<string, { record: BackupRecord; index: number }>();
  const files = new Map<string, string>();
  backups.forEach((record, index) => {
    const at = `backups[${index}]`;
    if (byId.has(record.id)) throw new FieldError(`${at}.id`, `duplicate backup id '${record.id}'`);
    const previous = backups[index - 1];
    if (previous && BigInt(record.id) <= BigInt(previous.id))
      throw new FieldError(`${at}.id`, `must be greater than the previous backup's id '${previous.id}'`);
    let parent: BackupRecord | undefined;
    if (record.parent !== null) {
      parent = byId.get(record.parent)?.record;
      if (!parent) throw new FieldError(`${at}.parent`, `backup '${record.parent}' is not an earlier backup of this set`);
      if (record.level === 'inc' && parent !== previous)
        throw new FieldError(`${at}.parent`, `an incremental must be relative to the preceding backup '${previous?.id ?? ''}'`);
      if (record.level === 'diff' && parent.level !== 'full')
        throw new FieldError(`${at}.parent`, `a differential must be relative to a full backup, '${parent.id}' is ${parent.level}`);
    }
    for (const id of record.mergedFrom ?? []) {
      if (BigInt(id) >= BigInt(record.id)) throw new FieldError(`${at}.mergedFrom`, `'${id}' is not older than '${record.id}'`);
    }
    record.disks.forEach((disk, diskIndex) => {
      const diskAt = `${at}.disks[${diskIndex}]`;
      const owner = files.get(disk.file);
      if (owner !== undefined) throw new FieldError(`${diskAt}.file`, `'${disk.file}' is already used by backup '${owner}'`);
      files.set(disk.file, record.id);
      if (disk.backingFile !== null) {
        const parentDisk = parent?.disks.find((candidate) => candidate.target === disk.target);
        if (!parentDisk) throw new FieldError(`${diskAt}.backingFile`, `parent backup '${record.parent ?? ''}' has no disk '${disk.target}'`);
        if (parentDisk.file !== disk.backingFile) {
          throw new FieldError(`${diskAt}.backingFile`, `must be the parent backup's file '${parentDisk.file}', found '${disk.backingFile}'`);
        }
      }
    });
    byId.set(record.id, { record, index });
  });
}

/** Validates parsed JSON as a manifest; throws a FieldError naming the first bad field. */
function validateManifest(value: Json): Manifest {
  const top = object(value, '', ['format', 'version', 'domain', 'backups']);
  const format = field(top, '', 'format');
  if (format !== MANIFEST_FORMAT) throw new FieldError('format', `must be '${MANIFEST_FORMAT}', found ${describe(format)}: not a libvirt-backup set manifest`);
  const version = field(top, '', 'version');
  if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 1)
    throw new FieldError('version', `must be a positive integer, found ${describe(version)}`);
  if (version > MANIFEST_VERSION) {
    throw new ManifestTooNewError(version);
  }
  const domain = validateDomain(field(top, '', 'domain'));
  const backups = field(top, '', 'backups');
  if (!Array.isArray(backups)) throw new FieldError('backups', `must be an array, found ${describe(backups)}`);
  const records = backups.map((backup: Json, index) => validateBackup(backup, `backups[${index}]`, version));
  validateRelations(records);
  return { format: MANIFEST_FORMAT, version: MANIFEST_VERSION, domain, backups: records };
}

class ManifestTooNewError extends Error {
  constructor(readonly version: number) {
    super(`version ${version}`);
  }
}

/**
 * Parses and validates manifest text. `fileLabel` starts every message (`manifest.json: ...`)
 * so the user knows which file to look at.
 */
export function parseManifest(text: string, fileLabel: string = MANIFEST_FILE): Manifest {
  let parsed: Json;
  try {
    parsed = JSON.parse(text) as Json;
  } catch (error) {
    throw new BackupSetError('MANIFEST_INVALID', `${fileLabel}: not valid JSON (${(error as Error).message})`, { path: fileLabel, cause: error });
  }
  try {
    return validateManifest(parsed);
  } catch (error) {
    if (error instanceof ManifestTooNewError) {
      throw new BackupSetError(
        'MANIFEST_TOO_NEW',
        `${fileLabel}: format version ${error.version} was written by a newer libvirt-backup (this one reads up to version ${MANIFEST_VERSION}); upgrade libvirt-backup to use this set`,
        { path: fileLabel },
      );
    }
    if (error instanceof FieldError) {
      throw new BackupSetError('MANIFEST_INVALID', `${fileLabel}: ${error.message}`, { path: fileLabel, cause: error });
    }
    throw error;
  }
}

/** Validates a manifest built in memory before it is written, so we never write one we would refuse to read. */
export function assertValidManifest(manifest: Manifest, fileLabel: string = MANIFEST_FILE): Manifest {
  return parseManifest(serializeManifest(manifest), fileLabel);
}

/** Stable, human-diffable serialisation: two-space indent, trailing newline. */
export function serializeManifest(manifest: Manifest): string {
  return `${JSON.stringify(manifest, null, 2)}\n`;
}

/** `vda.0003.inc.qcow2`: sorts by disk then age, and says what the file is without the manifest. */
export function backupFileName(target: string, id: string, level: BackupLevel): string {
  return `${target}.${id}.${level}.qcow2`;
}

export function canonicalUuid(uuid: string): string {
  return uuid.trim().toLowerCase();
}
