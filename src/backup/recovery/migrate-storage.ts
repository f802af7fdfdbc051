import { rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { BackupSet } from '../set/backup-set.js';
import { removeSetUser } from '../set/set-users.js';
import { restore } from '../restore/restore.js';
import { qemuImgInfo } from '../qcow2/qemu-img.js';
import { BlockJobAbortFlags } from '../../libvirt/constants.js';
import { BlockJobError } from '../../libvirt/block-jobs.js';
import type { Connection } from '../../libvirt/connection.js';
import type { Domain } from '../../libvirt/domain.js';
import { LibvirtError } from '../../libvirt/errors.js';
import type { StoragePool } from '../../libvirt/storage-pool.js';
import { parseDomainXml, parseRecoveryOrigin, type BlockCopyDestination, type RecoveryOrigin } from '../../xml/index.js';
import { RecoveryError } from './recovery-errors.js';
import { pathExists } from '../../common/path-exists.js';

/** Which recovered domain's disks to move off the backup set, and where. */
export interface MigrateStorageOptions {
  connection: Connection;
  /** The recovered domain's name. */
  domain: string;
  /** A directory on the hypervisor host, or a storage pool, for the disks' permanent images. */
  to: { dir: string } | { pool: string };
  /** Bytes per second each copy may use; default unlimited. */
  bandwidth?: number;
  signal?: AbortSignal;
  /** Called as each disk's copy starts and progresses. */
  onEvent?: (event: MigrateStorageEvent) => void;
}

/** One step of a storage move, as `MigrateStorageOptions.onEvent` receives it. */
export type MigrateStorageEvent =
  | { type: 'copy'; target: string; destination: string }
  | { type: 'progress'; target: string; bytesCopied: number; bytesTotal: number }
  | { type: 'ready'; target: string }
  | { type: 'pivoted'; target: string; destination: string }
  | { type: 'notice'; message: string };

/** One disk moved from its overlay on the set to its own storage. */
export interface MigratedDisk {
  target: string;
  /** The overlay the disk ran on (removed). */
  from: string;
  /** Where it lives now: a path, or `pool/volume`. */
  to: string;
  virtualSize: number;
}

/** The domain whose storage moved, and where each disk went. */
export interface MigrateStorageResult {
  domain: { name: string; uuid: string };
  disks: MigratedDisk[];
  /** The set the domain no longer runs from, when its record there was removed. */
  releasedSet: string | null;
}

interface PlannedCopy {
  target: string;
  overlay: string;
  virtualSize: number;
  /** Where the copy goes; for a volume, created first (libvirt 9.0 copies to a volume's path, not to the volume). */
  prepare: () => Promise<BlockCopyDestination>;
  /** The destination exists before the copy starts (a volume libvirt created, or a restore), and only its content is written. */
  reuseExternal: boolean;
  /** The destination holds the point already (restored): the copy moves only the overlay, the guest's writes. */
  shallow: boolean;
  label: string;
  /** Removes what the copy created (the destination file or volume). */
  discard: () => Promise<void>;
}

/**
 * Moves a domain started by `runFromBackup()` off its set while it runs: each disk still
 * on an overlay gets its permanent image, and once every copy mirrors the live disk,
 * each disk pivots to its copy and its overlay is removed, and so is the set's record
 * of the domain.
 *
 * Into a directory the set can be read from here, the image is first restored from the
 * point the domain runs from (restore reads the chain at the speed of a backup), and
 * QEMU's copy then moves only the overlay onto it: the guest's writes since `run`, and
 * those it makes meanwhile. QEMU's own copy of the whole chain (one coroutine reading it
 * and allocating the new image) ran at about half a restore's speed. Into a storage
 * pool, or where the set is not readable here, the disk is block-copied whole.
 *
 * An abort or a failure before the pivots stops the copies and removes what they wrote:
 * the domain runs on as before, on its overlays, and the next attempt starts afresh.
 * The pivots themselves take moments and are not interrupted.
 */
export async function migrateStorage(options: MigrateStorageOptions): Promise<MigrateStorageResult> {
  const { connection, signal, onEvent } = options;
  const domain = await findRunningDomain(connection, options.domain);
  const origin = parseRecoveryOrigin(await domain.getXMLDesc());
  if (origin === null)
    throw new RecoveryError('INVALID_ARGUMENT', `domain '${domain.name}' was not started by 'libvirt-backup run': it has no overlays to move`);
  const onOverlay = await disksOnOverlays(domain, origin);
  const result: MigrateStorageResult = { domain: { name: domain.name, uuid: domain.uuid }, disks: [], releasedSet: null };
  if (onOverlay.length > 0) {
    signal?.throwIfAborted();
    const copies = await planCopies(connection, domain, origin, onOverlay, options.to, options);
    await copyUntilReady(domain, copies, options);
    for (const copy of copies) {
      await domain.blockJobAbort(copy.target, BlockJobAbortFlags.PIVOT);
      onEvent?.({ type: 'pivoted', target: copy.target, destination: copy.label });
      await rm(copy.overlay, { force: true });
      result.disks.push({ target: copy.target, from: copy.overlay, to: copy.label, virtualSize: copy.virtualSize });
    }
  } else {
    onEvent?.({ type: 'notice', message: `the disks of '${domain.name}' no longer run on overlays: nothing to copy` });
  }
  if ((await disksOnOverlays(domain, origin)).length === 0) {
    try {
      await removeSetUser(origin.set, domain.uuid);
      result.releasedSet = origin.set;
    } catch (error) {
      onEvent?.({
        type: 'notice',
        message: `could not remove the record of '${domain.name}' from ${origin.set} (${(error as Error).message}); prune finds it stale`,
      });
    }
  }
  return result;
}

async function findRunningDomain(connection: Connection, name: string): Promise<Domain> {
  let domain: Domain;
  try {
    domain = await connection.lookupDomainByName(name);
  } catch (error) {
    if (error instanceof LibvirtError && error.codeName === 'VIR_ERR_NO_DOMAIN')
      throw new RecoveryError('DOMAIN_NOT_FOUND', `no domain named '${name}'`, { cause: error });
    throw error;
  }
  if (!(await domain.isActive()))
    throw new RecoveryError('DOMAIN_NOT_RUNNING', `domain '${name}' is not running; start it first (its storage moves while it runs)`);
  return domain;
}

async function disksOnOverlays(domain: Domain, origin: RecoveryOrigin): Promise<Array<{ target: string; overlay: string }>> {
  const live = parseDomainXml(await domain.getXMLDesc());
  return origin.overlays
    .filter((overlay) => live.disks.some((disk) => disk.target?.dev === overlay.target && disk.source?.file === overlay.path))
    .map(({ target, path }) => ({ target, overlay: path }));
}

/** A disk on its overlay, with what qemu-img says of the overlay (read once). */
interface InspectedOverlay {
  target: string;
  overlay: string;
  virtualSize: number;
  backingFilename: string | undefined;
}

async function planCopies(
  connection: Connection,
  domain: Domain,
  origin: RecoveryOrigin,
  disks: Array<{ target: string; overlay: string }>,
  to: MigrateStorageOptions['to'],
  options: Pick<MigrateStorageOptions, 'signal' | 'onEvent'>,
): Promise<PlannedCopy[]> {
  const pool = 'pool' in to ? await connection.lookupStoragePoolByName(to.pool) : null;
  const inspected: InspectedOverlay[] = [];
  for (const disk of disks) inspected.push({ ...disk, ...(await qemuImgInfo(disk.overlay)) });
  const set = pool === null ? await readableSet(origin, inspected) : null;
  const copies: PlannedCopy[] = [];
  for (const { target, overlay, virtualSize } of inspected) {
    const name = `${domain.name}-${target}.qcow2`;
    if (pool !== null) {
      copies.push(await planVolumeCopy(pool, name, target, overlay, virtualSize));
      continue;
    }
    const path = join(resolve((to as { dir: string }).dir), name);
    if (await pathExists(path)) throw new RecoveryError('OUTPUT_EXISTS', `${path} already exists; move it away or choose another --to`);
    copies.push({
      target,
      overlay,
      virtualSize,
      prepare: async () => {
        if (set !== null) await restorePoint(set, origin.backupId, target, path, options);
        return { type: 'file', path, format: 'qcow2' };
      },
      reuseExternal: set !== null,
      shallow: set !== null,
      label: path,
      discard: () => rm(path, { force: true }),
    });
  }
  return copies;
}

/**
 * The set the domain runs from, when this process can read it and every overlay stands
 * right on the point's files (so that a restore of the point is what the overlay's
 * backing chain reads as); null otherwise, and the disks are copied whole.
 */
async function readableSet(origin: RecoveryOrigin, overlays: readonly InspectedOverlay[]): Promise<BackupSet | null> {
  let set: BackupSet;
  try {
    set = await BackupSet.open(origin.set);
  } catch {
    return null;
  }
  const backup = set.backups.find((entry) => entry.id === origin.backupId);
  if (backup === undefined) return null;
  for (const { target, backingFilename } of overlays) {
    const file = backup.disks.find((disk) => disk.target === target)?.file;
    if (file === undefined || backingFilename === undefined || resolve(origin.set, file) !== resolve(backingFilename)) return null;
  }
  return set;
}

async function restorePoint(
  set: BackupSet,
  backupId: string,
  target: string,
  path: string,
  options: Pick<MigrateStorageOptions, 'signal' | 'onEvent'>,
): Promise<void> {
  options.onEvent?.({ type: 'notice', message: `${target}: restoring point ${backupId} into ${path}; the copy then moves only the guest's writes` });
  await restore(set, {
    to: path,
    at: backupId,
    disk: target,
    format: 'qcow2',
    ...(options.signal !== undefined ? { signal: options.signal } : {}),
  });
}

async function planVolumeCopy(pool: StoragePool, name: string, target: string, overlay: string, virtualSize: number): Promise<PlannedCopy> {
  const taken = await pool.lookupVolumeByName(name).then(
    () => true,
    (error: unknown) => {
      if (error instanceof LibvirtError && error.codeName === 'VIR_ERR_NO_STORAGE_VOL') return false;
      throw error;
    },
  );
  if (taken) throw new RecoveryError('OUTPUT_EXISTS', `volume ${name} already exists in pool ${pool.name}; delete it or choose another pool`);
  return {
    target,
    overlay,
    virtualSize,
    prepare: async () => {
      const volume = await pool.createVolume({ name, capacity: virtualSize, format: 'qcow2' });
      return { type: 'file', path: await volume.getPath(), format: 'qcow2' };
    },
    reuseExternal: true,
    shallow: false,
    label: `${pool.name}/${name}`,
    discard: async () => {
      const volume = await pool.lookupVolumeByName(name).catch(() => null);
      await volume?.delete().catch(() => undefined);
    },
  };
}

/** Starts every copy and waits until all mirror their disk; on any failure or abort, stops them and removes what they wrote. */
async function copyUntilReady(domain: Domain, copies: PlannedCopy[], options: MigrateStorageOptions): Promise<void> {
  const { signal, onEvent } = options;
  const started: PlannedCopy[] = [];
  try {
    for (const copy of copies) {
      started.push(copy);
      const destination = await copy.prepare();
      await domain.blockCopy(copy.target, destination, {
        transientJob: true,
        reuseExternal: copy.reuseExternal,
        shallow: copy.shallow,
        ...(options.bandwidth !== undefined ? { bandwidth: options.bandwidth } : {}),
      });
      onEvent?.({ type: 'copy', target: copy.target, destination: copy.label });
    }
    await Promise.all(
      copies.map(async (copy) => {
        await domain.waitForBlockJobReady(copy.target, {
          recheckMs: 500,
          ...(signal !== undefined ? { signal } : {}),
          onProgress: (info) => onEvent?.({ type: 'progress', target: copy.target, bytesCopied: info.cur, bytesTotal: info.end }),
        });
        onEvent?.({ type: 'ready', target: copy.target });
      }),
    );
  } catch (error) {
    for (const copy of started) {
      await domain.blockJobAbort(copy.target).catch(() => undefined);
      await copy.discard().catch(() => undefined);
    }
    if (signal?.aborted === true)
      throw new RecoveryError('ABORTED', `storage migration of '${domain.name}' stopped; it runs on its overlays as before`, { cause: error });
    if (error instanceof BlockJobError || error instanceof LibvirtError)
      throw new RecoveryError('COPY_FAILED', `storage migration of '${domain.name}' failed (${error.message}); it runs on its overlays as before`, {
        cause: error,
      });
    throw error;
  }
}
