import { randomUUID } from 'node:crypto';
import { BackupSet } from '../set/backup-set.js';
import { assertChainIntact } from '../set/chain-check.js';
import { recordSetUser, removeSetUser } from '../set/set-users.js';
import { SetLock } from '../set/set-lock.js';
import { throwIfAborted } from '../errors.js';
import { errnoCode } from '../../common/fs-errors.js';
import type { Connection } from '../../libvirt/connection.js';
import type { Domain } from '../../libvirt/domain.js';
import { LibvirtError } from '../../libvirt/errors.js';
import { parseDomainAccess, recoveredDomainXml, type DomainAccess } from '../../xml/index.js';
import { RecoveryError } from './recovery-errors.js';
import { isRemoteConnection } from './remote-uri.js';
import { readJournal } from '../set/run-journal.js';
import { directoryOverlays, poolOverlays, type OverlayStore, type PlannedOverlay } from './run-overlays.js';

/** Where overlays go unless told otherwise: libvirt's default image directory. */
export const DEFAULT_OVERLAY_DIR = '/var/lib/libvirt/images';

/** Which backup point to run as a new domain, and how. */
export interface RunFromBackupOptions {
  /** The set directory; it is only read (and a record of the new domain added, when it can be written). */
  dir: string;
  /** The backup point; default the latest. */
  at?: string;
  /** The new domain's name. */
  name: string;
  connection: Connection;
  /** Directory on the hypervisor host for the overlays; default `/var/lib/libvirt/images`. */
  overlayDir?: string;
  /**
   * A storage pool of the hypervisor for the overlays instead (libvirt makes them as
   * volumes backed by the set's files): needed on a remote hypervisor, which must see the
   * set at the same path as this host (shared storage).
   */
  overlayPool?: string;
  signal?: AbortSignal;
  /** Called at each step (check, overlay, define, start) and with notices. */
  onEvent?: (event: RunFromBackupEvent) => void;
}

/** One step of running from a backup, as `RunFromBackupOptions.onEvent` receives it. */
export type RunFromBackupEvent = { type: 'step'; step: 'check' | 'overlay' | 'define' | 'start'; target?: string } | { type: 'notice'; message: string };

/** The domain started from a backup point, and the set it runs from. */
export interface RunFromBackupResult {
  domain: { name: string; uuid: string };
  set: string;
  backupId: string;
  overlays: Array<{ target: string; path: string; backingFile: string }>;
  /** Writable disks of the saved definition that the backup does not hold; the new domain has none of them. */
  droppedDisks: string[];
  /** False when the set directory could not be written: nothing records that the domain runs from it. */
  recorded: boolean;
  access: DomainAccess;
}

/**
 * Starts a new domain straight from backup point `at` of a set: one thin qcow2 overlay
 * per disk whose backing chain is that point's files (which QEMU opens read-only, so
 * the set never changes), and the saved definition with a new name, UUID and MAC
 * addresses on those overlays. The time it takes does not depend on the disks' size.
 *
 * The set records the domain (`.in-use/`) before it exists, so that prune refuses the
 * files it runs from; `migrateStorage()` moves it off the set and removes the record.
 */
export async function runFromBackup(options: RunFromBackupOptions): Promise<RunFromBackupResult> {
  const { connection, signal, onEvent } = options;
  const uri = await connection.getURI();
  if (options.overlayPool !== undefined && options.overlayDir !== undefined)
    throw new RecoveryError('INVALID_ARGUMENT', 'overlayDir and overlayPool exclude each other: a directory of this host or a storage pool of the hypervisor');
  if (isRemoteConnection(uri) && options.overlayPool === undefined) {
    throw new RecoveryError(
      'INVALID_ARGUMENT',
      `on a remote hypervisor (${uri}) the overlays are made in one of its storage pools (--overlay-pool POOL), and it must see the backup set at the path it has here; see "Running a VM from a backup" in the README`,
    );
  }
  checkName(options.name);
  await assertNoDomainNamed(connection, options.name);
  const set = await BackupSet.open(options.dir);
  const point = options.at === undefined ? set.latest() : set.getBackup(options.at);
  if (point === null) throw new RecoveryError('INVALID_ARGUMENT', `${set.dir} holds no backups yet`);
  onEvent?.({ type: 'step', step: 'check' });
  const chains = point.disks.map((disk) => ({ disk, chain: set.chainFor(disk.target, point.id) }));
  for (const { chain } of chains) await assertChainIntact(set, chain, { signal });
  throwIfAborted(signal);

  const store =
    options.overlayPool === undefined ? directoryOverlays(options.overlayDir ?? DEFAULT_OVERLAY_DIR) : await poolOverlays(connection, options.overlayPool, uri);
  const uuid = randomUUID();
  const overlays: PlannedOverlay[] = [];
  for (const { disk, chain } of chains) {
    overlays.push({ target: disk.target, path: await store.plan(options.name, disk.target), backingFile: chain.at(-1)!.path, virtualSize: disk.virtualSize });
  }
  const files = [...new Set(chains.flatMap(({ chain }) => chain.map((link) => link.disk.file)))];
  const recorded = await recordUse(set, {
    domain: { name: options.name, uuid },
    uri,
    backupId: point.id,
    files,
    overlays: overlays.map(({ target, path }) => ({ target, path })),
  });
  if (!recorded)
    onEvent?.({
      type: 'notice',
      message: `${set.dir} cannot be written here: nothing records that ${options.name} runs from it, so whoever prunes it elsewhere is not warned`,
    });

  let domain: Domain | undefined;
  const created: PlannedOverlay[] = [];
  try {
    for (const overlay of overlays) {
      onEvent?.({ type: 'step', step: 'overlay', target: overlay.target });
      await store.create(overlay, signal);
      created.push(overlay);
    }
    const built = recoveredDomainXml(set.domain.xml, {
      name: options.name,
      uuid,
      disks: overlays.map(({ target, path }) => ({ target, file: path, format: 'qcow2' as const })),
      origin: { set: set.dir, backupId: point.id, overlays: overlays.map(({ target, path }) => ({ target, path })) },
    });
    for (const target of built.droppedDisks)
      onEvent?.({ type: 'notice', message: `disk ${target} is not in backup ${point.id}: the new domain runs without it` });
    throwIfAborted(signal);
    onEvent?.({ type: 'step', step: 'define' });
    domain = await connection.defineDomain(built.xml);
    onEvent?.({ type: 'step', step: 'start' });
    await domain.start();
    const access = parseDomainAccess(await domain.getXMLDesc());
    return {
      domain: { name: options.name, uuid },
      set: set.dir,
      backupId: point.id,
      overlays: overlays.map(({ target, path, backingFile }) => ({ target, path, backingFile })),
      droppedDisks: built.droppedDisks,
      recorded,
      access,
    };
  } catch (error) {
    await undo(domain, store, created, set.dir, uuid, recorded);
    throw error;
  }
}

/** libvirt takes almost any name; these are the ones that would break our file names or messages. */
function checkName(name: string): void {
  if (typeof name !== 'string' || name === '' || name.includes('/') || name.startsWith('.') || /[\u0000-\u001f\u007f]/.test(name) || name.length > 200)
    throw new RecoveryError('INVALID_ARGUMENT', `--name must be a domain name without '/', control characters or a leading dot, got ${JSON.stringify(name)}`);
}

async function assertNoDomainNamed(connection: Connection, name: string): Promise<void> {
  try {
    await connection.lookupDomainByName(name);
  } catch (error) {
    if (error instanceof LibvirtError && error.codeName === 'VIR_ERR_NO_DOMAIN') return;
    throw error;
  }
  throw new RecoveryError('DOMAIN_EXISTS', `a domain named '${name}' exists already; choose another --name`);
}

/**
 * Records the new domain under the set's lock, so that a prune either ran before (and the
 * chain check saw its result) or sees the record. An interrupted prune must be finished
 * first: its files disagree with the manifest until then.
 */
async function recordUse(set: BackupSet, user: Parameters<typeof recordSetUser>[1]): Promise<boolean> {
  let lock: SetLock;
  try {
    lock = await SetLock.acquire(set.dir);
  } catch (error) {
    if (['EROFS', 'EACCES', 'EPERM'].includes(errnoCode((error as Error).cause) ?? '')) return false;
    throw error;
  }
  try {
    const journal = await readJournal(set.dir);
    if (journal?.kind === 'prune')
      throw new RecoveryError('INVALID_ARGUMENT', `${set.dir} has an interrupted prune; open it for writing first (the next backup or prune finishes it)`);
    // A prune that ran after the chains were checked may have rebuilt them.
    const before = set.backups;
    await set.reload();
    if (set.backups !== before && JSON.stringify(set.backups) !== JSON.stringify(before))
      throw new RecoveryError('INVALID_ARGUMENT', `${set.dir} changed while the run was being prepared (a prune or backup); try again`);
    return await recordSetUser(set.dir, user);
  } finally {
    await lock.release();
  }
}

async function undo(domain: Domain | undefined, store: OverlayStore, overlays: PlannedOverlay[], dir: string, uuid: string, recorded: boolean): Promise<void> {
  if (domain !== undefined) {
    await domain.destroy().catch(() => undefined);
    await domain.undefine().catch(() => undefined);
  }
  for (const overlay of overlays) await store.remove(overlay).catch(() => undefined);
  if (recorded) await removeSetUser(dir, uuid).catch(() => undefined);
}
