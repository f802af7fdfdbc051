import type { Connection } from './connection.js';
import type { StoragePoolState } from './constants.js';
import type { NativeStoragePool } from './native.js';
import { StorageVolume } from './storage-volume.js';
import { buildStorageVolumeXml, type StorageVolumeSpec } from '../xml/index.js';

/** A storage pool's state and sizes in bytes. */
export interface StoragePoolInfo {
  state: StoragePoolState;
  capacity: number;
  allocation: number;
  /** Free bytes for new volumes. */
  available: number;
}

/** A libvirt storage pool, obtained from a `Connection`: where volumes are created on the hypervisor host. */
export class StoragePool {
  readonly connection: Connection;
  readonly #native: NativeStoragePool;

  /** @internal Pools come from a Connection. */
  constructor(connection: Connection, native: NativeStoragePool) {
    this.connection = connection;
    this.#native = native;
  }

  /** The pool's name (known locally). */
  get name(): string {
    return this.#native.getName();
  }

  /** The pool's UUID (known locally). */
  get uuid(): string {
    return this.#native.getUUIDString();
  }

  /** The pool's XML (virStoragePoolGetXMLDesc). */
  async getXMLDesc(flags = 0): Promise<string> {
    return this.#native.getXMLDesc(flags);
  }

  /** The pool's state, capacity, allocation and free space (virStoragePoolGetInfo). */
  async getInfo(): Promise<StoragePoolInfo> {
    const info = await this.#native.getInfo();
    return { ...info, state: info.state as StoragePoolState };
  }

  /** Whether the pool is started (virStoragePoolIsActive). */
  async isActive(): Promise<boolean> {
    return this.#native.isActive();
  }

  /** Whether the pool has a persistent definition (virStoragePoolIsPersistent). */
  async isPersistent(): Promise<boolean> {
    return this.#native.isPersistent();
  }

  /** Rescans the pool's storage (volumes made or removed behind libvirt's back). */
  async refresh(flags = 0): Promise<void> {
    return this.#native.refresh(flags);
  }

  /** Starts a defined pool (`virStoragePoolCreate`, `StoragePoolCreateFlags`). */
  async start(flags = 0): Promise<void> {
    return this.#native.start(flags);
  }

  /** Stops the pool; a transient pool is gone after this. Its volumes' data stays. */
  async destroy(): Promise<void> {
    return this.#native.destroy();
  }

  /** Removes a persistent pool's definition. */
  async undefine(): Promise<void> {
    return this.#native.undefine();
  }

  /**
   * Creates a volume from XML or a typed spec (`buildStorageVolumeXml`). Rejects with
   * `VIR_ERR_STORAGE_VOL_EXIST` when the pool already has one of that name.
   */
  async createVolume(volume: string | StorageVolumeSpec, flags = 0): Promise<StorageVolume> {
    const xml = typeof volume === 'string' ? volume : buildStorageVolumeXml(volume);
    return new StorageVolume(this, await this.#native.createVolume(xml, flags));
  }

  /** Rejects with `VIR_ERR_NO_STORAGE_VOL` when there is none. */
  async lookupVolumeByName(name: string): Promise<StorageVolume> {
    return new StorageVolume(this, await this.#native.lookupVolumeByName(name));
  }

  /** The pool's volumes (virStoragePoolListAllVolumes). */
  async listAllVolumes(flags = 0): Promise<StorageVolume[]> {
    const list = await this.#native.listAllVolumes(flags);
    return list.map((native) => new StorageVolume(this, native));
  }
}
