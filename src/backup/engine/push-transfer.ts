// Push mode: libvirt writes the backup files itself; we watch space and wait for it to let go of them.

import { BlockJobStatus } from '../../libvirt/constants.js';
import type { Domain } from '../../libvirt/domain.js';
import type { BlockJobPayload } from '../../libvirt/events.js';
import { BackupError } from './engine-types.js';
import { type SpaceNeed } from './space-guard.js';
import { type DiskPlan } from './run-context.js';

/** Push: libvirt says what it still has to write; the files are written by QEMU, copy-before-write included. */
export async function pushSpaceNeed(domain: Domain, disks: readonly DiskPlan[]): Promise<SpaceNeed> {
  const stats = await domain.getJobStats().catch(() => undefined);
  const remaining =
    stats?.diskRemaining ?? (stats?.diskTotal !== undefined && stats.diskProcessed !== undefined ? stats.diskTotal - stats.diskProcessed : undefined);
  // Before libvirt reports figures, assume every disk may be written whole.
  const fallback = disks.reduce((sum, disk) => sum + disk.virtualSize, 0);
  return { scratch: 0, output: remaining ?? fallback };
}

/** libvirt closes a push target after the job event; the block-job event follows that. */
export async function waitForTargetsReleased(events: BlockJobPayload[], targets: string[]): Promise<void> {
  const deadline = Date.now() + 60_000;
  const done = () => targets.every((t) => events.some((e) => e.disk === t && e.status !== BlockJobStatus.READY));
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`libvirt did not release the backup targets of ${targets.join(', ')}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const failed = events.find((e) => targets.includes(e.disk) && e.status !== BlockJobStatus.COMPLETED);
  if (failed) throw new BackupError('JOB_FAILED', `backup of disk ${failed.disk} ended with status ${BlockJobStatus[failed.status] ?? failed.status}`);
}
