// Where a domain run from a backup point writes: a thin qcow2 overlay per disk on top of
// the point's chain, made with qemu-img in a directory of this host, or as a volume of a
// libvirt storage pool (on this host or a remote hypervisor that sees the set at the same
// path).
import { rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';

import type { Connection } from '../../libvirt/connection.js';
import { LibvirtError } from '../../libvirt/errors.js';
import type { StoragePool } from '../../libvirt/storage-pool.js';
import { qemuImgCreate } from '../qcow2/qemu-img.js';
import { RecoveryError } from './recovery-errors.js';
import { pathExists } from '../../common/path-exists.js';

/** One disk's overlay: where it goes and what it sits on. */
export interface PlannedOverlay {
  target: string;
  /** The overlay's path as the hypervisor sees it. */
  path: string;
  /** The chain's top file, as the hypervisor sees it (the same path here and there). */
  backingFile: string;
  virtualSize: number;
}

/** Makes and removes the overlays of a run. */
export interface OverlayStore {
  /** The overlay's path; refuses one that exists already. */
  plan(name: string, target: string): Promise<string>;
  create(overlay: PlannedOverlay, signal: AbortSignal | undefined): Promise<void>;
  remove(overlay: PlannedOverlay): Promise<void>;
}

/** Overlays as files of a directory of this host, made with qemu-img. */
export function directoryOverlays(dir: string): OverlayStore {
  const absolute = resolve(dir);
  return {
    async plan(name, target) {
      const path = join(absolute, overlayName(name, target));
      if (await pathExists(path)) throw new RecoveryError('OUTPUT_EXISTS', `${path} already exists; remove it or choose another --name`);
      return path;
    },
    async create(overlay, signal) {
      await qemuImgCreate(overlay.path, {
        format: 'qcow2',
        size: overlay.virtualSize,
        backingFile: overlay.backingFile,
        backingFormat: 'qcow2',
        ...(signal ? { signal } : {}),
      });
    },
    async remove(overlay) {
      await rm(overlay.path, { force: true });
    },
  };
}

/**
 * Overlays as volumes of a libvirt storage pool, made by libvirt on the hypervisor with
 * the chain's top file as their backing store: that file must be readable there at the
 * path it has here (shared storage), which libvirt checks as it creates the volume.
 */
export async function poolOverlays(connection: Connection, poolName: string, uri: string): Promise<OverlayStore> {
  let pool: StoragePool;
  try {
    pool = await connection.lookupStoragePoolByName(poolName);
  } catch (error) {
    if (error instanceof LibvirtError && error.codeName === 'VIR_ERR_NO_STORAGE_POOL') {
      throw new RecoveryError('INVALID_ARGUMENT', `${uri} has no storage pool '${poolName}' (virsh pool-list --all shows the pools)`, { cause: error });
    }
    throw error;
  }
  if (!(await pool.isActive()))
    throw new RecoveryError('INVALID_ARGUMENT', `storage pool '${poolName}' on ${uri} is not active; start it first (virsh pool-start ${poolName})`);
  const targetPath = /<target>\s*<path>([^<]+)<\/path>/.exec(await pool.getXMLDesc())?.[1];
  if (targetPath === undefined)
    throw new RecoveryError('INVALID_ARGUMENT', `storage pool '${poolName}' on ${uri} has no target path: its volumes cannot be overlay files`);
  const volumes = new Map<string, string>();
  return {
    async plan(name, target) {
      const volume = overlayName(name, target);
      volumes.set(target, volume);
      const taken = await pool.lookupVolumeByName(volume).then(
        () => true,
        (error: unknown) => {
          if (error instanceof LibvirtError && error.codeName === 'VIR_ERR_NO_STORAGE_VOL') return false;
          throw error;
        },
      );
      if (taken)
        throw new RecoveryError('OUTPUT_EXISTS', `storage pool '${poolName}' on ${uri} already has a volume ${volume}; remove it or choose another --name`);
      return join(targetPath, volume);
    },
    async create(overlay) {
      try {
        const volume = await pool.createVolume({
          name: volumes.get(overlay.target)!,
          capacity: overlay.virtualSize,
          format: 'qcow2',
          mode: 0o600,
          backingStore: { path: overlay.backingFile, format: 'qcow2' },
        });
        overlay.path = await volume.getPath();
      } catch (error) {
        if (!(error instanceof LibvirtError)) throw error;
        throw new RecoveryError(
          'INVALID_ARGUMENT',
          `cannot make the overlay of ${overlay.target} in storage pool '${poolName}' on ${uri}: ${error.message} (the hypervisor must read the backup set at ${overlay.backingFile}, the path it has here)`,
          { cause: error },
        );
      }
    },
    async remove(overlay) {
      const volume = await pool.lookupVolumeByName(volumes.get(overlay.target)!).catch(() => undefined);
      await volume?.delete();
    },
  };
}

function overlayName(name: string, target: string): string {
  return `${name}-${target}.overlay.qcow2`;
}
