// One disk image as the pull copy's tests need it: a qcow2 `vda` in a directory of the
// test's own, removed after it, and exported by qemu-nbd as a shut-off domain's disk is.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { ExecutionContext } from 'ava';

import { OfflineExports, type OfflineImage } from '../../src/backup/engine/offline-images.js';
import type { DiskPlan } from '../../src/backup/engine/run-context.js';
import { qemuImg, qemuIo } from './qcow2-helpers.js';

export interface DiskImage {
  dir: string;
  image: OfflineImage;
  /** The disk as a full backup plans it. */
  disk: DiskPlan;
}

/** A `size` qcow2 image holding `data` bytes of 0x5a from its start (nothing if omitted). */
export async function diskImage(t: ExecutionContext, prefix: string, size: string, data?: string): Promise<DiskImage> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const image = { target: 'vda', path: join(dir, 'vda.qcow2'), format: 'qcow2' };
  await qemuImg('create', '-q', '-f', 'qcow2', image.path, size);
  if (data !== undefined) await qemuIo(image.path, [`write -P 0x5a 0 ${data}`]);
  const disk: DiskPlan = {
    target: 'vda',
    format: 'qcow2',
    tracksChanges: true,
    level: 'full',
    file: 'vda.full.qcow2',
    backingFile: null,
    virtualSize: 0,
    dataBytes: 0,
  };
  return { dir, image, disk };
}

/** `diskImage()`, exported by its own qemu-nbd until the test ends. */
export async function exportedDisk(t: ExecutionContext, prefix: string, size: string, data?: string): Promise<DiskImage & { exports: OfflineExports }> {
  const made = await diskImage(t, prefix, size, data);
  const exports = await OfflineExports.start([made.disk], new Map([['vda', made.image]]), null, made.dir);
  t.teardown(() => exports.stop());
  return { ...made, exports };
}
