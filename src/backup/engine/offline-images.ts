// A shut-off domain backed up without running any of its code: each disk image is exported
// read-only by qemu-nbd (with the parent checkpoint's bitmap for an incremental), and the
// run's checkpoint is made as libvirt makes one for a running domain: a new recording
// bitmap in each image, then the checkpoint defined in libvirt's metadata, so the chain
// goes on seamlessly once the domain runs again.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { CheckpointCreateFlags, CheckpointDeleteFlags } from '../../libvirt/constants.js';
import type { Domain } from '../../libvirt/domain.js';
import { acceptsConnections } from '../../common/accepts-connections.js';
import { dieWithParent } from '../../common/die-with-parent.js';
import { buildCheckpointXml, parseCheckpointXml, type DomainSummary } from '../../xml/index.js';
import { qemuImgBitmap, qemuImgBitmaps } from '../qcow2/qemu-img.js';
import type { BackupLevel, BackupRecord } from '../set/manifest.js';
import { BackupError } from './engine-types.js';
import { findCheckpoint } from './leftover-checkpoints.js';

/** How long qemu-nbd may take to open an image and listen. */
const EXPORT_READY_MS = 15_000;

/** What the run plans for a disk (its level, and whether it takes a bitmap). */
interface PlannedDisk {
  target: string;
  level: BackupLevel;
  tracksChanges: boolean;
}

/** A disk of a shut-off domain: the image file libvirt would start it on. */
export interface OfflineImage {
  target: string;
  path: string;
  format: string;
}

/** The images of the selected disks, from the domain's definition; each must be a file on this host. */
export function offlineImages(summary: DomainSummary, targets: readonly string[]): Map<string, OfflineImage> {
  const images = new Map<string, OfflineImage>();
  for (const target of targets) {
    const disk = summary.disks.find((candidate) => candidate.target?.dev === target);
    const path = disk?.source?.file ?? disk?.source?.dev;
    if (path === undefined) {
      throw new BackupError(
        'UNSUPPORTED',
        `disk ${target} of shut-off domain ${summary.name ?? ''} is not an image file on this host; start the domain paused to back it up (--start-paused)`,
      );
    }
    images.set(target, { target, path, format: disk?.driver?.type ?? 'raw' });
  }
  return images;
}

/** The bitmap of `checkpoint` that records a disk's changes (libvirt names it after the checkpoint unless its XML says otherwise). */
export function checkpointBitmap(parent: BackupRecord, target: string): string {
  const disk = parent.checkpointXml === null ? undefined : parseCheckpointXml(parent.checkpointXml).disks?.find((candidate) => candidate.name === target);
  return disk !== undefined && 'bitmap' in disk && disk.bitmap !== undefined ? disk.bitmap : parent.checkpoint!;
}

/** True when every tracking disk's image holds the checkpoint's bitmap, consistent; otherwise why not. */
export async function offlineBitmapsUsable(
  images: Map<string, OfflineImage>,
  parent: BackupRecord,
  disks: readonly { target: string; tracksChanges: boolean }[],
): Promise<true | string> {
  for (const disk of disks) {
    if (!disk.tracksChanges || !parent.disks.some((d) => d.target === disk.target)) continue;
    const image = images.get(disk.target)!;
    const name = checkpointBitmap(parent, disk.target);
    const bitmap = (await qemuImgBitmaps(image.path)).find((candidate) => candidate.name === name);
    if (bitmap === undefined) return `the bitmap ${name} of checkpoint ${parent.checkpoint} is missing from ${image.path}`;
    if (bitmap.flags.includes('in-use')) return `the bitmap ${name} in ${image.path} is inconsistent (the image was not closed cleanly)`;
  }
  return true;
}

const STOP_RETRY_MS = 500;
const STOP_GRACE_MS = 5_000;

/** One qemu-nbd per disk, read-only, each on its own socket in the run's private socket directory. */
export class OfflineExports {
  private constructor(
    private readonly processes: ChildProcess[],
    private readonly sockets: Map<string, { path: string; bitmap?: string }>,
  ) {}

  static async start(
    disks: readonly PlannedDisk[],
    images: Map<string, OfflineImage>,
    parent: BackupRecord | null,
    socketDir: string,
  ): Promise<OfflineExports> {
    const exports = new OfflineExports([], new Map());
    try {
      for (const disk of disks) {
        const image = images.get(disk.target)!;
        const bitmap = disk.level !== 'full' && parent !== null ? checkpointBitmap(parent, disk.target) : undefined;
        const socket = join(socketDir, `${disk.target}.sock`);
        exports.processes.push(await startQemuNbd(image, socket, disk.target, bitmap));
        exports.sockets.set(disk.target, { path: socket, ...(bitmap !== undefined ? { bitmap } : {}) });
      }
    } catch (error) {
      await exports.stop();
      throw error;
    }
    return exports;
  }

  /** Where a disk's export listens, and the bitmap it exports with it. */
  exportOf(target: string): { path: string; bitmap?: string } {
    return this.sockets.get(target)!;
  }

  async stop(): Promise<void> {
    await Promise.all(
      this.processes.map(async (child) => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise((resolveExit) => child.once('exit', resolveExit));
        // qemu-nbd loses a SIGTERM that arrives while it is still starting (its handler
        // only marks the state its main loop then sets to running): asked again until it
        // ends, then killed. Read-only, it has nothing to lose.
        child.kill('SIGTERM');
        const started = Date.now();
        const again = setInterval(() => child.kill(Date.now() - started < STOP_GRACE_MS ? 'SIGTERM' : 'SIGKILL'), STOP_RETRY_MS);
        try {
          await exited;
        } finally {
          clearInterval(again);
        }
      }),
    );
  }
}

async function startQemuNbd(image: OfflineImage, socket: string, exportName: string, bitmap: string | undefined): Promise<ChildProcess> {
  // Read-only, so QEMU's image locking keeps anyone from starting the domain (which takes
  // the write lock) while it is read. Persistent, so that probing it does not end it; it
  // dies with this process (parent-death signal), and stop() ends it otherwise.
  const args = [
    '--read-only',
    '--persistent',
    '-f',
    image.format,
    '--shared=8',
    `--socket=${socket}`,
    `--export-name=${exportName}`,
    ...(bitmap ? [`--bitmap=${bitmap}`] : []),
    image.path,
  ];
  const [command, commandArgs] = dieWithParent('qemu-nbd', args);
  const child = spawn(command, commandArgs, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const failed = new Promise<never>((_, reject) => {
    child.once('error', (error) => reject(new BackupError('JOB_FAILED', `cannot run qemu-nbd to read ${image.path}: ${error.message}`, { cause: error })));
    child.once('exit', (code, signal) =>
      reject(new BackupError('JOB_FAILED', `qemu-nbd could not export ${image.path} (${signal ?? `exit ${code}`}): ${stderr.trim() || 'no message'}`)),
    );
  });
  failed.catch(() => undefined);
  const deadline = Date.now() + EXPORT_READY_MS;
  // The socket file exists a moment before qemu-nbd listens on it: only a connection says it is ready.
  while (!(await Promise.race([acceptsConnections({ path: socket }), failed]))) {
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new BackupError('JOB_FAILED', `qemu-nbd did not export ${image.path} within ${EXPORT_READY_MS / 1000} s`);
    }
    await Promise.race([sleep(50), failed]);
  }
  return child;
}

/**
 * The run's checkpoint, made as libvirt makes one: a recording bitmap named after it in
 * every image that tracks changes, then the checkpoint defined in libvirt's metadata (its
 * parent the set's latest checkpoint, when libvirt has it). Undone on any failure.
 */
export async function createOfflineCheckpoint(
  domain: Domain,
  images: Map<string, OfflineImage>,
  disks: readonly PlannedDisk[],
  name: string,
  parentName: string | null,
): Promise<void> {
  const tracking = disks.filter((disk) => disk.tracksChanges);
  const added: OfflineImage[] = [];
  try {
    for (const disk of tracking) {
      const image = images.get(disk.target)!;
      await qemuImgBitmap(image.path, 'add', name);
      added.push(image);
    }
    const parent = parentName !== null && (await findCheckpoint(domain, parentName)) !== undefined ? parentName : undefined;
    const xml = buildCheckpointXml(
      {
        name,
        ...(parent !== undefined ? { parent } : {}),
        creationTime: Math.floor(Date.now() / 1000),
        disks: disks.map((disk) =>
          disk.tracksChanges ? { name: disk.target, checkpoint: 'bitmap' as const, bitmap: name } : { name: disk.target, checkpoint: 'no' as const },
        ),
      },
      { libvirtVersion: await domain.connection.getLibVersion(), redefine: true },
    );
    // Validation would ask QEMU about the bitmaps, and the domain has no QEMU running.
    await domain.createCheckpoint(xml, CheckpointCreateFlags.REDEFINE);
  } catch (error) {
    await removeOfflineCheckpoint(domain, added, name);
    throw error;
  }
}

/** Undoes `createOfflineCheckpoint()`: libvirt's metadata (it cannot delete a shut-off domain's checkpoint otherwise) and the bitmaps. */
export async function removeOfflineCheckpoint(domain: Domain, images: Iterable<OfflineImage>, name: string): Promise<void> {
  const checkpoint = await findCheckpoint(domain, name).catch(() => undefined);
  await checkpoint?.delete(CheckpointDeleteFlags.METADATA_ONLY).catch(() => undefined);
  for (const image of images) {
    if ((await qemuImgBitmaps(image.path).catch(() => [])).some((bitmap) => bitmap.name === name)) {
      await qemuImgBitmap(image.path, 'remove', name).catch(() => undefined);
    }
  }
}
