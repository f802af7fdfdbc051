import type { StorageVolumeType } from './constants.js';
import type { NativeStorageVolume } from './native.js';
import type { StoragePool } from './storage-pool.js';
import { downloadThrough, uploadThrough, type DownloadOptions, type UploadOptions, type UploadResult, type VolumeChunk } from './volume-transfer.js';

/** A storage volume's type and sizes in bytes. */
export interface StorageVolumeInfo {
  type: StorageVolumeType;
  /** The size the guest sees, in bytes. */
  capacity: number;
  /** Bytes the volume takes on the host (a sparse volume takes less than its capacity). */
  allocation: number;
}

/** A libvirt storage volume, obtained from a `StoragePool`. */
export class StorageVolume {
  readonly pool: StoragePool;
  readonly #native: NativeStorageVolume;

  /** @internal Volumes come from a StoragePool. */
  constructor(pool: StoragePool, native: NativeStorageVolume) {
    this.pool = pool;
    this.#native = native;
  }

  /** The volume's name in its pool (known locally). */
  get name(): string {
    return this.#native.getName();
  }

  /** The volume's key, unique on its host (often its path; known locally). */
  get key(): string {
    return this.#native.getKey();
  }

  /** Where the volume lives on the hypervisor host (a path there, not necessarily here). */
  async getPath(): Promise<string> {
    return this.#native.getPath();
  }

  /** The volume's type, capacity and allocation (virStorageVolGetInfo). */
  async getInfo(): Promise<StorageVolumeInfo> {
    const info = await this.#native.getInfo();
    return { ...info, type: info.type as StorageVolumeType };
  }

  /** The volume's XML (virStorageVolGetXMLDesc). */
  async getXMLDesc(flags = 0): Promise<string> {
    return this.#native.getXMLDesc(flags);
  }

  /** Deletes the volume and its data (`StorageVolumeDeleteFlags`). */
  async delete(flags = 0): Promise<void> {
    return this.#native.delete(flags);
  }

  /**
   * Writes `source` into the volume from `options.offset`, through a libvirt stream
   * (`virStorageVolUpload`): works the same on a remote connection, with no access to
   * the host's files. Holes are sent as holes (`SPARSE_STREAM`), so they cost no
   * transfer and stay unallocated in a fresh volume. Data is not copied: a chunk's
   * bytes must stay unchanged until its `release` is called (or, without one, until
   * the upload has settled). Backpressure: the source is read only as fast as the
   * daemon takes the data. On failure or abort the stream is aborted; the volume keeps
   * whatever was written (delete it if it was made for this upload).
   */
  async upload(source: AsyncIterable<VolumeChunk> | Iterable<VolumeChunk>, options: UploadOptions = {}): Promise<UploadResult> {
    const stream = this.pool.connection.newStream();
    return uploadThrough(this.#native, stream, source, options);
  }

  /**
   * Reads the volume through a libvirt stream (`virStorageVolDownload`), yielding data
   * and, with `sparse` (the default), holes. Each data chunk is a fresh buffer. Stopping
   * early (break, a thrown error, the signal) aborts the transfer.
   */
  download(options: DownloadOptions = {}): AsyncGenerator<VolumeChunk> {
    const stream = this.pool.connection.newStream();
    return downloadThrough(this.#native, stream, options);
  }
}
