// The facts about an image file that the set's checks compare with the manifest: its
// format, the backing name its header stores, its virtual size. Read in-process, because
// a `qemu-img info` process per file cost 8-12 ms for each link of a chain, on every
// incremental backup and every commit. A file our reader refuses (not qcow2, damaged, or
// using a feature it does not read) is asked of `qemu-img`, so what passes or fails, and
// the words that say so, stay qemu-img's.
import { open } from 'node:fs/promises';
import { basename } from 'node:path';
import { throwIfAborted } from '../errors.js';
import { fileByteSource, readQcow2Header } from './qcow2-reader.js';
import { qemuImgInfo } from './qemu-img.js';

export interface ImageHeader {
  /** `qcow2`, or what qemu-img took a file for when it is not qcow2 our reader reads. */
  format: string;
  /** The backing file name exactly as stored (relative names stay relative), or null. */
  backingFilename: string | null;
  /** In bytes, whole 512-byte sectors as QEMU sees them. */
  virtualSize: number;
}

export async function readImageHeader(path: string, options: { signal?: AbortSignal | undefined } = {}): Promise<ImageHeader> {
  throwIfAborted(options.signal);
  const ours = await readOwnHeader(path).catch(() => null);
  if (ours !== null) return ours;
  const info = await qemuImgInfo(path, options.signal ? { signal: options.signal } : {});
  return { format: info.format, backingFilename: info.backingFilename ?? null, virtualSize: info.virtualSize };
}

async function readOwnHeader(path: string): Promise<ImageHeader> {
  const handle = await open(path, 'r');
  try {
    const { size } = await handle.stat();
    const header = await readQcow2Header(fileByteSource(handle, size), basename(path));
    return { format: 'qcow2', backingFilename: header.backingFile, virtualSize: header.virtualSize };
  } finally {
    await handle.close();
  }
}
