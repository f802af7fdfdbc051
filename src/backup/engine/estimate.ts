// What a backup would do, without doing it: the level it would take and, per disk, the
// bytes it would copy. Nothing is created: no set, no lock, no job, no checkpoint.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { connect } from '../../libvirt/connection.js';
import { CheckpointXMLFlags } from '../../libvirt/constants.js';
import type { Domain } from '../../libvirt/domain.js';
import { parseCheckpointXml, type DomainSummary } from '../../xml/index.js';
import { qemuImgDataBytes } from '../qcow2/qemu-img.js';
import { BackupSet } from '../set/backup-set.js';
import type { BackupLevel, BackupRecord } from '../set/manifest.js';
import { DirtyBitmapFlags, NbdClient } from '../../nbd/index.js';
import { checkpointBitmap, OfflineExports, type OfflineImage } from './offline-images.js';
import { asDaemonLost } from './daemon-lost.js';
import { checkRequestedLevel, inspectDomainForRun, setExists } from './engine.js';
import type { BackupEvent, BackupOptions } from './engine-types.js';
import { findCheckpoint } from './leftover-checkpoints.js';
import { planLevel } from './level-plan.js';
import type { LevelPlan } from './run-context.js';

/** How a disk's byte count was found. */
export type EstimateBasis =
  /** libvirt's size of the checkpoint's bitmap: the bytes the guest changed since then (an incremental or differential copies those). */
  | 'changed-since-checkpoint'
  /** The allocated, non-zero ranges of the disk's image chain, as `qemu-img map` reports them (a full copies those). */
  | 'allocated-data'
  /** Not known without running the job (a remote hypervisor's full, a disk not in a file). */
  | 'unknown';

/** One disk of an estimate. */
export interface DiskEstimate {
  target: string;
  level: BackupLevel;
  /** The bytes the backup would copy; null when `basis` is `unknown`. */
  bytes: number | null;
  basis: EstimateBasis;
  /** Why the disk copies whole in an incremental run, or why its bytes are unknown. */
  note?: string;
}

/** What `runBackup()` with the same options would do now. */
export interface BackupEstimate {
  domain: string;
  level: BackupLevel;
  /** Why this level (as a run's `start` event says). */
  reason: string;
  /** The backup an incremental or differential would build on. */
  parent: string | null;
  disks: DiskEstimate[];
  /** The sum over the disks, or null when any is unknown. */
  totalBytes: number | null;
  notices: string[];
}

/**
 * Estimates a backup without taking it: the level `runBackup()` would choose with these
 * options, and per disk the bytes it would copy (libvirt's bitmap sizes for
 * incremental and differential disks; the image chain's allocated data for full ones on
 * this host). Reads the set if there is one; creates, locks and changes nothing, in the
 * set or in libvirt (a checkpoint libvirt lost is not redefined: its disks say unknown).
 */
export async function estimateBackup(options: BackupOptions): Promise<BackupEstimate> {
  options.signal?.throwIfAborted();
  const requested = checkRequestedLevel(options.level ?? 'auto');
  const notices: string[] = [];
  const emit = (event: BackupEvent) => {
    if (event.type === 'notice') notices.push(event.message);
    options.onEvent?.(event);
  };
  const ownConnection = options.connection === undefined;
  const conn = options.connection ?? (await connect(options.uri ?? 'qemu:///system'));
  try {
    const { domain, remote, summary, selection, offline } = await inspectDomainForRun(conn, options, requested, emit);
    const set = await openSetIfAny(options.dest, domain);
    const plan: LevelPlan =
      set === null
        ? noSetPlan(requested)
        : await planLevel(set, requested, domain, selection.disks, emit, options.signal, {
            redefine: false,
            ...(offline !== null ? { offlineImages: offline } : {}),
          });
    const disks: DiskEstimate[] = [];
    for (const disk of selection.disks) {
      const inParent = plan.parent?.disks.some((d) => d.target === disk.target) ?? false;
      const level: BackupLevel = plan.level !== 'full' && disk.tracksChanges && inParent ? plan.level : 'full';
      const note = plan.level !== 'full' && level === 'full' ? `full copy (${disk.fullCopyReason ?? 'not in the parent backup'})` : undefined;
      const counted =
        level === 'full'
          ? await allocatedData(summary, disk.target, remote !== null)
          : offline !== null
            ? await changedInImage(offline.get(disk.target)!, plan.parent!, disk.target, options.signal)
            : await changedSince(domain, plan.parent!.checkpoint!, disk.target);
      disks.push({ target: disk.target, level, ...counted, ...(note !== undefined && counted.note === undefined ? { note } : {}) });
    }
    const unknown = disks.some((disk) => disk.bytes === null);
    return {
      domain: domain.name,
      level: plan.level,
      reason: plan.reason,
      parent: plan.parent?.id ?? null,
      disks,
      totalBytes: unknown ? null : disks.reduce((sum, disk) => sum + disk.bytes!, 0),
      notices,
    };
  } catch (error) {
    throw await asDaemonLost(conn, options.domain, error);
  } finally {
    if (ownConnection) await conn.close();
  }
}

/** The set at `dest` read as it is (no lock, no recovery), or null when there is none yet. */
async function openSetIfAny(dest: string, domain: Domain): Promise<BackupSet | null> {
  if (!(await setExists(dest))) return null;
  const set = await BackupSet.open(dest);
  set.assertDomain({ name: domain.name, uuid: domain.uuid });
  return set;
}

/** Without a set there is only a full to take (an incremental or differential was refused when the domain was inspected). */
function noSetPlan(requested: string): LevelPlan {
  return { level: 'full', parent: null, reason: requested === 'full' ? 'full backup requested' : 'the set has no backup yet' };
}

/** libvirt's own count of what changed since the checkpoint, the bytes an incremental reads. */
async function changedSince(domain: Domain, checkpointName: string, target: string): Promise<Pick<DiskEstimate, 'bytes' | 'basis' | 'note'>> {
  const checkpoint = await findCheckpoint(domain, checkpointName);
  if (checkpoint === undefined) {
    return { bytes: null, basis: 'unknown', note: `checkpoint ${checkpointName} is missing from libvirt (a backup would redefine it from the set's copy)` };
  }
  const spec = parseCheckpointXml(await checkpoint.getXMLDesc(CheckpointXMLFlags.SIZE | CheckpointXMLFlags.NO_DOMAIN));
  const disk = spec.disks?.find((candidate) => candidate.name === target);
  const size = disk !== undefined && 'size' in disk ? disk.size : undefined;
  if (size === undefined) return { bytes: null, basis: 'unknown', note: `libvirt reports no bitmap size for ${target} in checkpoint ${checkpointName}` };
  return { bytes: size, basis: 'changed-since-checkpoint' };
}

/** A shut-off domain's changes, counted from the checkpoint's bitmap in the image (libvirt counts only for a running domain). */
async function changedInImage(
  image: OfflineImage,
  parent: BackupRecord,
  target: string,
  signal: AbortSignal | undefined,
): Promise<Pick<DiskEstimate, 'bytes' | 'basis' | 'note'>> {
  const socketDir = await mkdtemp(join(tmpdir(), 'lvb-estimate-'));
  const bitmap = checkpointBitmap(parent, target);
  const exports = await OfflineExports.start([{ target, level: 'inc', tracksChanges: true }], new Map([[target, image]]), parent, socketDir);
  try {
    const client = await NbdClient.connect({
      path: exports.exportOf(target).path,
      exportName: target,
      metaContexts: [`qemu:dirty-bitmap:${bitmap}`],
      ...(signal ? { signal } : {}),
    });
    try {
      let bytes = 0;
      for await (const extent of client.extents(`qemu:dirty-bitmap:${bitmap}`, undefined, signal ? { signal } : {})) {
        if (extent.flags & DirtyBitmapFlags.DIRTY) bytes += extent.length;
      }
      return { bytes, basis: 'changed-since-checkpoint' };
    } finally {
      await client.close().catch(() => undefined);
    }
  } finally {
    await exports.stop();
    await rm(socketDir, { recursive: true, force: true });
  }
}

/** What a full copies: the image chain's allocated, non-zero data, read on this host. */
async function allocatedData(summary: DomainSummary, target: string, remote: boolean): Promise<Pick<DiskEstimate, 'bytes' | 'basis' | 'note'>> {
  if (remote) return { bytes: null, basis: 'unknown', note: "a full's data is known only to a backup job on a remote hypervisor" };
  const disk = summary.disks.find((d) => d.target?.dev === target);
  const file = disk?.source?.file ?? disk?.source?.dev;
  if (file === undefined) return { bytes: null, basis: 'unknown', note: 'the disk is not a file or block device on this host' };
  return { bytes: await qemuImgDataBytes(file, disk?.driver?.type ?? 'raw'), basis: 'allocated-data' };
}
