import { mkdir, readdir, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic, fsyncDirectory } from './atomic-file.js';
import { BackupSetError } from '../errors.js';
import { describeFsError, errnoCode } from '../../common/fs-errors.js';
import { currentOwner, parseOwner, type ProcessOwner } from './process-liveness.js';

/**
 * Domains that run from a set's files: a domain recovered from a backup point runs on
 * thin overlays whose backing chains are files of the set, and the set must not
 * rewrite or delete those files while it does.
 *
 * Each such domain has a record in `.in-use/<uuid>.json` in the set directory, written
 * before the domain is defined (so a crash never leaves a running domain unrecorded) and
 * removed once its storage moved away. The set is where whoever prunes it looks, from
 * whichever host. A record outlives its domain when a run crashed before the domain
 * existed, or the domain was destroyed and undefined: such records are stale, and are
 * recognised by asking libvirt (a `SetUserCheck`) whether the domain still uses the
 * overlays; without an answer a record counts as in use.
 */
export const SET_USERS_DIR = '.in-use';
const RECORD_FORMAT = 'libvirt-backup-set-user';
const RECORD_VERSION = 1;
const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** A domain that runs from the set's files, as its record says. */
export interface SetUser {
  domain: { name: string; uuid: string };
  /** The libvirt URI the domain was defined on. */
  uri: string;
  /** The backup point it runs from. */
  backupId: string;
  /** Files of the set its overlays read (every disk's chain), by name. */
  files: string[];
  /** Its overlays, one per disk, as paths on the hypervisor host. */
  overlays: Array<{ target: string; path: string }>;
  /** Who recorded it, and when. */
  recordedBy: ProcessOwner;
}

/** Whether a recorded domain still depends on the set, as libvirt says. */
export type SetUserState = { inUse: true; state: string } | { inUse: false; reason: string };

/** Asks libvirt about one recorded domain. Throwing counts as "in use, cannot check". */
export type SetUserCheck = (user: SetUser) => Promise<SetUserState>;

/** A recorded set user, and whether it still depends on the set. */
export interface SetUserFinding {
  user: SetUser;
  /** The record's file, relative to the set directory. */
  record: string;
  state: SetUserState;
}

function recordName(uuid: string): string {
  return join(SET_USERS_DIR, `${uuid}.json`);
}

function checkRecord(value: unknown, label: string): SetUser {
  const fail = (problem: string): never => {
    throw new BackupSetError('RECORD_INVALID', `${label}: ${problem}`, { path: label });
  };
  if (typeof value !== 'object' || value === null) return fail('not a JSON object');
  const record = value as Record<string, unknown>;
  if (record['format'] !== RECORD_FORMAT || record['version'] !== RECORD_VERSION) return fail(`not a ${RECORD_FORMAT} record of version ${RECORD_VERSION}`);
  const domain = record['domain'] as Record<string, unknown> | undefined;
  if (typeof domain?.['name'] !== 'string' || typeof domain['uuid'] !== 'string' || !UUID_PATTERN.test(domain['uuid']))
    return fail('domain must have a name and a lowercase uuid');
  const strings = (field: string): string[] => {
    const list = record[field];
    if (!Array.isArray(list) || !list.every((item) => typeof item === 'string')) return fail(`${field} must be a list of names`);
    return list as string[];
  };
  const overlays = record['overlays'];
  if (!Array.isArray(overlays) || !overlays.every((item) => typeof item?.target === 'string' && typeof item?.path === 'string'))
    return fail('overlays must be a list of { target, path }');
  const owner = parseOwner(record['recordedBy']);
  if (typeof record['uri'] !== 'string' || typeof record['backupId'] !== 'string' || owner === undefined)
    return fail('uri, backupId and recordedBy are required');
  return {
    domain: { name: domain['name'], uuid: domain['uuid'] },
    uri: record['uri'],
    backupId: record['backupId'],
    files: strings('files'),
    overlays: (overlays as Array<{ target: string; path: string }>).map(({ target, path }) => ({ target, path })),
    recordedBy: owner,
  };
}

/**
 * Records that `user` is about to run from the set. Returns false, writing nothing,
 * when the set directory cannot be written (a read-only copy of a set): nobody can
 * rewrite its files from here either.
 */
export async function recordSetUser(dir: string, user: Omit<SetUser, 'recordedBy'>): Promise<boolean> {
  const record = { format: RECORD_FORMAT, version: RECORD_VERSION, ...user, recordedBy: currentOwner() };
  checkRecord(record, 'new set-user record');
  try {
    await mkdir(join(dir, SET_USERS_DIR), { mode: 0o700 });
  } catch (error) {
    const code = errnoCode(error);
    if (code === 'EROFS' || code === 'EACCES' || code === 'EPERM') return false;
    if (code !== 'EEXIST') throw new BackupSetError('SET_IO', `cannot create ${join(dir, SET_USERS_DIR)}: ${describeFsError(error)}`, { cause: error });
  }
  const path = join(dir, recordName(user.domain.uuid));
  try {
    await writeFileAtomic(path, `${JSON.stringify(record, null, 2)}\n`);
  } catch (error) {
    throw new BackupSetError('SET_IO', `cannot write ${path}: ${describeFsError(error)}`, { path, cause: error });
  }
  return true;
}

/** Removes `uuid`'s record, if any. */
export async function removeSetUser(dir: string, uuid: string): Promise<boolean> {
  const path = join(dir, recordName(uuid));
  try {
    await unlink(path);
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return false;
    throw new BackupSetError('SET_IO', `cannot remove ${path}: ${describeFsError(error)}`, { path, cause: error });
  }
  await fsyncDirectory(join(dir, SET_USERS_DIR)).catch(() => undefined);
  return true;
}

/** Every record in the set, in name order. A record that cannot be read is an error: it may protect a running domain. */
export async function readSetUsers(dir: string): Promise<Array<{ record: string; user: SetUser }>> {
  let entries: string[];
  try {
    entries = (await readdir(join(dir, SET_USERS_DIR))).filter((entry) => entry.endsWith('.json')).sort();
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return [];
    throw new BackupSetError('SET_IO', `cannot read ${join(dir, SET_USERS_DIR)}: ${describeFsError(error)}`, { cause: error });
  }
  const users: Array<{ record: string; user: SetUser }> = [];
  for (const entry of entries) {
    const record = join(SET_USERS_DIR, entry);
    const path = join(dir, record);
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (error) {
      if (errnoCode(error) === 'ENOENT') continue;
      throw new BackupSetError('SET_IO', `cannot read ${path}: ${describeFsError(error)}`, { path, cause: error });
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    users.push({ record, user: checkRecord(parsed, path) });
  }
  return users;
}

/** Each record with libvirt's answer; a check that throws leaves the record in use. */
export async function findSetUsers(dir: string, check: SetUserCheck | undefined): Promise<SetUserFinding[]> {
  const findings: SetUserFinding[] = [];
  for (const { record, user } of await readSetUsers(dir)) {
    let state: SetUserState;
    if (check === undefined) state = { inUse: true, state: 'not checked (no libvirt connection to ask)' };
    else {
      try {
        state = await check(user);
      } catch (error) {
        state = { inUse: true, state: `could not be checked: ${error instanceof Error ? error.message : String(error)}` };
      }
    }
    findings.push({ record, user, state });
  }
  return findings;
}

/**
 * Refuses `action` when it would change or delete any of `files` (names in the set)
 * that a recorded domain still runs from, naming the domain. Records libvirt calls
 * stale are removed (the caller holds the set's lock) and returned.
 */
export async function assertFilesNotInUse(dir: string, files: ReadonlySet<string>, action: string, check: SetUserCheck | undefined): Promise<SetUserFinding[]> {
  const stale: SetUserFinding[] = [];
  for (const finding of await findSetUsers(dir, check)) {
    if (!finding.state.inUse) {
      await removeSetUser(dir, finding.user.domain.uuid);
      stale.push(finding);
      continue;
    }
    const touched = finding.user.files.filter((file) => files.has(file));
    if (touched.length === 0) continue;
    const { user } = finding;
    throw new BackupSetError(
      'SET_IN_USE',
      `cannot ${action}: domain '${user.domain.name}' (uuid ${user.domain.uuid} on ${user.uri}, ${finding.state.state}) runs from backup ${user.backupId} of this set, ` +
        `which needs ${touched.join(', ')}; move its storage first (libvirt-backup migrate-storage ${user.domain.name} --to DIR), or remove the domain ` +
        `(if it is gone for good, remove ${join(dir, finding.record)})`,
      { path: join(dir, finding.record) },
    );
  }
  return stale;
}
