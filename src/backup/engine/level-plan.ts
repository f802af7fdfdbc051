// Which level this run takes (full, incremental, differential), and from which parent.

import type { Checkpoint } from '../../libvirt/checkpoint.js';
import { CheckpointCreateFlags, CheckpointXMLFlags } from '../../libvirt/constants.js';
import type { Domain } from '../../libvirt/domain.js';
import { LibvirtError } from '../../libvirt/errors.js';
import { type BackupSet } from '../set/backup-set.js';
import { assertChainIntact } from '../set/chain-check.js';
import { type SelectedDisk } from './disk-selection.js';
import { BackupError, type BackupEvent, type RequestedLevel } from './engine-types.js';
import { type BackupLevel, type BackupRecord } from '../set/manifest.js';
import { daemonLost } from './daemon-lost.js';
import { findCheckpoint } from './leftover-checkpoints.js';
import { assertChainChecksums } from '../set/verified-files.js';
import { type LevelPlan } from './run-context.js';
import { offlineBitmapsUsable, type OfflineImage } from './offline-images.js';

export async function planLevel(
  set: BackupSet,
  requested: RequestedLevel,
  domain: Domain,
  disks: readonly SelectedDisk[],
  emit: (event: BackupEvent) => void,
  signal: AbortSignal | undefined,
  /**
   * `redefine: false` (an estimate): a checkpoint libvirt lost is not redefined from the
   * set's copy; the plan takes it as usable. `offlineImages` (a shut-off domain): the
   * bitmaps are looked for in these images, since no QEMU can be asked.
   */
  options: { redefine?: boolean; offlineImages?: Map<string, OfflineImage> } = {},
): Promise<LevelPlan> {
  if (requested === 'full') return { level: 'full', parent: null, reason: 'full backup requested' };
  const auto = requested === 'auto';
  const wanted: BackupLevel = auto ? 'inc' : requested;
  const refuse = (why: string): LevelPlan => {
    if (auto) {
      emit({ type: 'notice', message: `taking a full backup: ${why}` });
      return { level: 'full', parent: null, reason: why };
    }
    throw new BackupError('CHAIN_UNUSABLE', `cannot take ${wanted === 'inc' ? 'an incremental' : 'a differential'} backup: ${why}`);
  };
  const parent = wanted === 'inc' ? set.latest() : set.lastFull();
  if (parent === null) return refuse(set.latest() === null ? 'the set has no backup yet' : 'the set has no full backup');
  if (!disks.some((disk) => disk.tracksChanges)) return refuse('no disk can track changes (none is qcow2)');
  // A damaged chain is reported, never built upon (nor silently replaced by a full).
  for (const disk of disks) {
    if (!parent.disks.some((d) => d.target === disk.target)) continue;
    const chain = set.chainFor(disk.target, parent.id);
    await assertChainIntact(set, chain);
    await assertChainChecksums(set.dir, chain, set.referencedFiles(), signal ? { signal } : {});
  }
  const usable =
    options.redefine === false && (await findCheckpoint(domain, parent.checkpoint ?? '')) === undefined && parent.checkpointXml !== null
      ? true
      : await checkpointUsable(set, parent, domain, emit, disks, options.offlineImages);
  if (usable !== true) return refuse(usable);
  return {
    level: wanted,
    parent,
    reason: auto ? `changes since backup ${parent.id}` : `${wanted} backup requested, relative to backup ${parent.id}`,
  };
}

/**
 * True when `parent`'s checkpoint exists in libvirt with an intact bitmap, after
 * redefining it (and any older ones of the set) from the saved XML if libvirt lost
 * them; otherwise why not.
 */
async function checkpointUsable(
  set: BackupSet,
  parent: BackupRecord,
  domain: Domain,
  emit: (event: BackupEvent) => void,
  disks: readonly SelectedDisk[],
  offline: Map<string, OfflineImage> | undefined,
): Promise<true | string> {
  const name = parent.checkpoint;
  if (name === null) return `backup ${parent.id} has no checkpoint to start from`;
  let checkpoint: Checkpoint | undefined = await findCheckpoint(domain, name);
  if (checkpoint === undefined) {
    if (parent.checkpointXml === null) return `checkpoint ${name} is missing from libvirt and the set holds no copy of it`;
    // Older checkpoints first, so each redefinition finds its parent.
    const missing = [];
    for (const record of set.backups) {
      if (record.checkpoint === null || record.checkpointXml === null) continue;
      if (record.id === parent.id || (await findCheckpoint(domain, record.checkpoint)) === undefined) missing.push(record);
      if (record.id === parent.id) break;
    }
    for (const record of missing) {
      try {
        // Validation asks QEMU about the bitmaps: a shut-off domain has none running.
        const flags = CheckpointCreateFlags.REDEFINE | (offline === undefined ? CheckpointCreateFlags.REDEFINE_VALIDATE : 0);
        const redefined = await domain.createCheckpoint(record.checkpointXml!, flags);
        if (record.id === parent.id) checkpoint = redefined;
        emit({ type: 'notice', message: `checkpoint ${record.checkpoint} was missing from libvirt; redefined it from the set's saved copy` });
      } catch (error) {
        if (!(error instanceof LibvirtError) || (await daemonLost(domain.connection))) throw error;
        if (record.id === parent.id) return `checkpoint ${name} is missing from libvirt and could not be redefined: ${error.message}`;
      }
    }
    if (checkpoint === undefined) return `checkpoint ${name} could not be restored`;
  }
  if (offline !== undefined) return offlineBitmapsUsable(offline, parent, disks);
  try {
    // Asking for bitmap sizes makes libvirt look at the bitmaps themselves.
    await checkpoint.getXMLDesc(CheckpointXMLFlags.SIZE | CheckpointXMLFlags.NO_DOMAIN);
  } catch (error) {
    // A daemon that went away says nothing about the bitmap.
    if (error instanceof LibvirtError && !(await daemonLost(domain.connection)))
      return `the bitmap of checkpoint ${name} is missing or broken (${error.message})`;
    throw error;
  }
  return true;
}
