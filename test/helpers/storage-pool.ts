// Transient directory pools for tests, each in its own directory under the images
// directory, removed with everything in them.
import { rm } from 'node:fs/promises';

import { LibvirtError, StoragePoolCreateFlags, type Connection, type StoragePool } from '../../src/index.js';
import { IMAGE_DIR, uniqueName } from './daemon.js';

export interface ThrowawayPool {
  name: string;
  pool: StoragePool;
  /** The pool's directory on the (local) hypervisor host. */
  path: string;
  /** Deletes the pool's volumes, destroys it and removes its directory. Idempotent. */
  cleanup(): Promise<void>;
}

let swept = false;

/** Pools left by test processes that died: destroyed, their directories removed. */
async function sweepStalePools(conn: Connection): Promise<void> {
  if (swept) return;
  swept = true;
  for (const pool of await conn.listAllStoragePools()) {
    const match = /^lvbt-.+-(\d+)-[0-9a-f]{8}$/.exec(pool.name);
    if (match === null || pidAlive(Number(match[1]))) continue;
    await destroyPool(pool, `${IMAGE_DIR}/${pool.name}`).catch(() => undefined);
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function destroyPool(pool: StoragePool, path: string): Promise<void> {
  try {
    for (const volume of await pool.listAllVolumes()) await volume.delete().catch(() => undefined);
    await pool.destroy();
  } catch (error) {
    if (!(error instanceof LibvirtError && ['VIR_ERR_NO_STORAGE_POOL', 'VIR_ERR_OPERATION_INVALID'].includes(error.codeName))) throw error;
  }
  await rm(path, { recursive: true, force: true });
}

/** A transient `dir` pool (built by libvirt) that only this test uses. */
export async function createThrowawayPool(conn: Connection, label: string): Promise<ThrowawayPool> {
  await sweepStalePools(conn);
  const name = uniqueName(label);
  const path = `${IMAGE_DIR}/${name}`;
  const pool = await conn.createStoragePool({ type: 'dir', name, path, mode: 0o700 }, StoragePoolCreateFlags.WITH_BUILD);
  let done = false;
  return {
    name,
    pool,
    path,
    cleanup: async () => {
      if (done) return;
      done = true;
      await destroyPool(pool, path);
    },
  };
}
