// Restore into a libvirt storage pool: one new volume per disk, filled through a
// libvirt stream, so it works the same on a remote host (qemu+tls://, qemu+ssh://)
// and reads nothing of the host's files. Optionally a new domain is defined on the
// volumes. Nothing that existed before is touched; what this restore made is removed
// again if it fails.
import { basename, resolve } from 'node:path';
import type { BackupSet, ChainLink } from '../set/backup-set.js';
import { OpenedChain, type ChainFile } from '../restore/chain-restore.js';
import { BackupSetError, throwIfAborted } from '../errors.js';
import { imageLayout, qcow2ImageChunks, type ImageChunk } from '../qcow2/qcow2-image-stream.js';
import type { GuestRun } from '../qcow2/chain-guest-stream.js';
import { LibvirtError } from '../../libvirt/errors.js';
import type { Connection } from '../../libvirt/connection.js';
import type { StoragePool } from '../../libvirt/storage-pool.js';
import type { StorageVolume } from '../../libvirt/storage-volume.js';
import type { UploadResult } from '../../libvirt/volume-transfer.js';
import { restoredDomainXml } from '../../xml/index.js';

/** What to restore into a libvirt storage pool, and where. */
export interface PoolRestoreOptions {
  /** Where the pool is: any libvirt connection, local or remote. */
  connection: Connection;
  /** Name of an active storage pool on that connection. */
  pool: string;
  /** Backup id to restore; default the newest. */
  at?: string;
  /** Restore only this disk (not with `define`); default every disk of that backup. */
  disk?: string;
  /** Format of the new volumes. */
  format: 'qcow2' | 'raw';
  /**
   * Define a new domain of this name from the set's domain XML, its disks on the new
   * volumes, with a new UUID and new MAC addresses. Refused if the name is taken.
   */
  define?: string;
  /** See `RestoreOptions.verifyChecksums` (default true). */
  verifyChecksums?: boolean;
  signal?: AbortSignal;
  /** Called as each disk's volume is written, with the fraction done. */
  onProgress?: (progress: { target: string; fraction: number }) => void;
  /** Things worth telling the user that do not stop the restore. */
  onNotice?: (message: string) => void;
  /**
   * Opens a new connection to the same host. Used only when a failed restore cannot
   * remove the volumes it made over its own connection (lost with a daemon restart, a
   * network cut, or libvirt's client giving up after the daemon refused stream data):
   * they are removed over the new one. Without it, each volume left is named in a notice.
   */
  reconnect?: () => Promise<Connection>;
}

/** The domain a pool restore defined, by name and UUID. */
export interface DefinedDomain {
  name: string;
  uuid: string;
}

/** One disk restored into a storage volume. */
export interface PoolRestoredDisk {
  target: string;
  pool: string;
  /** The new volume's name in the pool. */
  volume: string;
  /** Where the volume lives on the hypervisor host. */
  path: string;
  format: 'qcow2' | 'raw';
  /** The files read, base first. */
  chain: string[];
  /** Bytes of the chain files read front to back. */
  bytesRead: number;
  /** What went over the stream: data bytes, and bytes skipped as holes. */
  sent: UploadResult;
}

/** What a pool restore wrote: one volume per disk, and the domain it defined when asked to. */
export interface PoolRestoreResult {
  backupId: string;
  disks: PoolRestoredDisk[];
  /** The domain defined with `define`. */
  domain?: DefinedDomain;
  notices: string[];
}

/** The volume name for a disk: `<name>-<target>.<format>`. */
export function restoredVolumeName(base: string, target: string, format: 'qcow2' | 'raw'): string {
  return `${base}-${target}.${format}`;
}

/**
 * Restores one backup point of `set` into new volumes of a storage pool (named
 * `<define or domain-backupId>-<target>.<format>`), uploading each disk as a sparse
 * stream: ranges that read as zeroes are sent as holes and stay unallocated. Every chain
 * file is read once and checked against the manifest as it streams; a damaged file fails
 * the restore. Existing volumes are never overwritten (the restore is refused before
 * anything is made), and a restore that fails or is aborted deletes the volumes it made.
 */
export async function restoreToPool(set: BackupSet, options: PoolRestoreOptions): Promise<PoolRestoreResult> {
  checkOptions(options);
  const backup = options.at === undefined ? set.latest() : set.getBackup(options.at);
  if (backup === null) throw new BackupSetError('NOT_FOUND', `${set.dir} holds no backups to restore`);
  const targets = options.disk === undefined ? backup.disks.map((disk) => disk.target) : [options.disk];
  const chains = targets.map((target) => ({ target, chain: set.chainFor(target, backup.id) }));
  const notices: string[] = [];
  const notice = (message: string) => {
    notices.push(message);
    options.onNotice?.(message);
  };

  const uri = await options.connection.getURI();
  const pool = await findPool(options.connection, options.pool, uri);
  const base = options.define ?? `${set.domain.name}-${backup.id}`;
  const names = new Map(targets.map((target) => [target, restoredVolumeName(base, target, options.format)]));
  for (const name of names.values()) await assertNoVolume(pool, name, uri);
  if (options.define !== undefined) await assertNoDomain(options.connection, options.define, uri);

  const opened: Array<{ target: string; chain: ChainLink[]; files: OpenedChain }> = [];
  const created: StorageVolume[] = [];
  try {
    for (const { target, chain } of chains) {
      const files = await OpenedChain.open(chain.map(chainFile), {
        signal: options.signal,
        backingMatches: (actual, expected) => basename(actual) === expected && resolve(set.dir, actual) === set.pathOf(expected),
      });
      opened.push({ target, chain, files });
    }
    const disks: PoolRestoredDisk[] = [];
    for (const { target, chain, files } of opened) {
      disks.push(await uploadDisk({ pool, name: names.get(target)!, uri, options, notice, created }, target, chain, files));
    }
    throwIfAborted(options.signal);
    const domain = options.define === undefined ? undefined : await defineRestoredDomain(set, options.connection, options.define, disks, notice);
    return { backupId: backup.id, disks, ...(domain === undefined ? {} : { domain }), notices };
  } catch (error) {
    await removeVolumes(created, { poolName: pool.name, uri, reconnect: options.reconnect, notice });
    throw error;
  } finally {
    for (const { files } of opened) await files.close();
  }
}

/**
 * Deletes the volumes a failed restore made: over the restore's connection, or, where
 * that fails (the connection is gone), over a new one. What cannot be removed is named,
 * with the command that removes it.
 */
async function removeVolumes(
  created: readonly StorageVolume[],
  {
    poolName,
    uri,
    reconnect,
    notice,
  }: { poolName: string; uri: string; reconnect: (() => Promise<Connection>) | undefined; notice: (message: string) => void },
): Promise<void> {
  const left = new Map<string, string>();
  for (const volume of created) {
    await volume.delete().catch((cause: unknown) => left.set(volume.name, (cause as Error).message));
  }
  if (left.size > 0 && reconnect !== undefined) await removeOverNewConnection(left, poolName, reconnect);
  for (const [name, reason] of left) {
    notice(`could not remove volume ${name} after the failure (${reason}); remove it with: virsh -c ${uri} vol-delete --pool ${poolName} ${name}`);
  }
}

/** Removes the volumes `left` names over a new connection; each one still there stays in `left` with why. */
async function removeOverNewConnection(left: Map<string, string>, poolName: string, reconnect: () => Promise<Connection>): Promise<void> {
  let fresh: Connection | undefined;
  try {
    fresh = await reconnect();
    const pool = await fresh.lookupStoragePoolByName(poolName);
    for (const name of [...left.keys()]) {
      const failure = await pool
        .lookupVolumeByName(name)
        .then((volume) => volume.delete())
        .then(
          () => undefined,
          (cause: unknown) => (isLibvirtError(cause, 'VIR_ERR_NO_STORAGE_VOL') ? undefined : (cause as Error).message),
        );
      if (failure === undefined) left.delete(name);
      else left.set(name, failure);
    }
  } catch (cause) {
    for (const name of left.keys()) left.set(name, `${left.get(name)!}; a new connection did not help either: ${(cause as Error).message}`);
  } finally {
    await fresh?.close().catch(() => undefined);
  }
}

function checkOptions(options: PoolRestoreOptions): void {
  if (options.format !== 'qcow2' && options.format !== 'raw') {
    throw new BackupSetError('INVALID_ARGUMENT', `format must be 'qcow2' or 'raw', got '${String(options.format)}'`);
  }
  if (options.define !== undefined && options.disk !== undefined) {
    throw new BackupSetError('INVALID_ARGUMENT', 'defining a domain needs every disk of the backup; do not choose one disk with define');
  }
  throwIfAborted(options.signal);
}

/** Where one disk goes, and the list of volumes made so far (for the clean-up of a failure). */
interface VolumeTarget {
  pool: StoragePool;
  name: string;
  uri: string;
  options: PoolRestoreOptions;
  notice: (message: string) => void;
  created: StorageVolume[];
}

/** A new volume, filled from the chain in one checked pass. */
async function uploadDisk(
  { pool, name, uri, options, notice, created }: VolumeTarget,
  target: string,
  chain: ChainLink[],
  files: OpenedChain,
): Promise<PoolRestoredDisk> {
  const disk = files.guestOrdered({
    verifyChecksums: options.verifyChecksums,
    signal: options.signal,
    onNotice: notice,
    onProgress: (fraction) => options.onProgress?.({ target, fraction }),
  });
  const volume = await createVolume(pool, name, disk.virtualSize, options.format, uri);
  created.push(volume);
  const chunks = options.format === 'raw' ? rawChunks(disk.runs()) : qcow2ImageChunks(imageLayout(disk.virtualSize, disk.dataRuns), disk.runs());
  const sent = await volume.upload(chunks, { signal: options.signal });
  return {
    target,
    pool: pool.name,
    volume: name,
    path: await volume.getPath(),
    format: options.format,
    chain: chain.map((link) => link.disk.file),
    bytesRead: disk.report().bytesStreamed,
    sent,
  };
}

/** The saved definition with its disks on the new volumes; defined, not started (libvirt fills in the new UUID and MAC addresses). */
async function defineRestoredDomain(
  set: BackupSet,
  connection: Connection,
  name: string,
  disks: PoolRestoredDisk[],
  notice: (message: string) => void,
): Promise<DefinedDomain> {
  const rewritten = restoredDomainXml(set.domain.xml, {
    name,
    disks: disks.map((disk) => ({ target: disk.target, pool: disk.pool, volume: disk.volume, format: disk.format })),
  });
  for (const target of rewritten.droppedDisks) notice(`disk ${target} of the saved definition was not backed up: left out of ${name}`);
  if (rewritten.droppedNvram) notice(`${name} gets a new NVRAM file from its firmware template (the original's variables are not in the backup)`);
  const defined = await connection.defineDomain(rewritten.xml);
  return { name: defined.name, uuid: defined.uuid };
}

function chainFile(link: ChainLink): ChainFile {
  const { disk } = link;
  return { name: disk.file, path: link.path, checksum: disk.checksum, size: disk.fileSize, backingFile: disk.backingFile, virtualSize: disk.virtualSize };
}

async function* rawChunks(runs: AsyncIterable<GuestRun>): AsyncGenerator<ImageChunk> {
  for await (const run of runs) yield run.kind === 'data' ? { kind: 'data', data: run.data, release: run.release } : { kind: 'hole', length: run.length };
}

function isLibvirtError(error: unknown, codeName: string): boolean {
  return error instanceof LibvirtError && error.codeName === codeName;
}

async function findPool(connection: Connection, name: string, uri: string): Promise<StoragePool> {
  let pool: StoragePool;
  try {
    pool = await connection.lookupStoragePoolByName(name);
  } catch (error) {
    if (isLibvirtError(error, 'VIR_ERR_NO_STORAGE_POOL')) {
      throw new BackupSetError('NOT_FOUND', `${uri} has no storage pool '${name}' (virsh pool-list --all shows the pools)`, { cause: error });
    }
    throw error;
  }
  if (!(await pool.isActive()))
    throw new BackupSetError('INVALID_ARGUMENT', `storage pool '${name}' on ${uri} is not active; start it first (virsh pool-start ${name})`);
  return pool;
}

async function assertNoVolume(pool: StoragePool, name: string, uri: string): Promise<void> {
  try {
    await pool.lookupVolumeByName(name);
  } catch (error) {
    if (isLibvirtError(error, 'VIR_ERR_NO_STORAGE_VOL')) return;
    throw error;
  }
  throw new BackupSetError(
    'OUTPUT_EXISTS',
    `volume '${name}' already exists in storage pool '${pool.name}' on ${uri}; restore never overwrites a volume: delete it or choose another name`,
  );
}

async function assertNoDomain(connection: Connection, name: string, uri: string): Promise<void> {
  try {
    await connection.lookupDomainByName(name);
  } catch (error) {
    if (isLibvirtError(error, 'VIR_ERR_NO_DOMAIN')) return;
    throw error;
  }
  throw new BackupSetError('OUTPUT_EXISTS', `a domain named '${name}' already exists on ${uri}; choose another name to define`);
}

async function createVolume(pool: StoragePool, name: string, capacity: number, format: 'qcow2' | 'raw', uri: string): Promise<StorageVolume> {
  try {
    return await pool.createVolume({ name, capacity, format, mode: 0o600 });
  } catch (error) {
    // Made by someone else between the check and now: theirs, so it is not ours to remove.
    if (isLibvirtError(error, 'VIR_ERR_STORAGE_VOL_EXIST')) {
      throw new BackupSetError('OUTPUT_EXISTS', `volume '${name}' appeared in storage pool '${pool.name}' on ${uri} while restoring; it was left alone`, {
        cause: error,
      });
    }
    throw error;
  }
}
