// Push mode: libvirt writes the backup files itself; we watch space and wait for it to let go of them.

import { BlockJobStatus, BlockJobType } from '../../libvirt/constants.js';
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

/** How long libvirt gets to release the push targets once the job has ended. */
export const TARGET_RELEASE_TIMEOUT = { ms: 60_000 };

/** How often libvirt is asked whether it still holds a target whose event has not come. */
const RELEASE_RECHECK_MS = 2_000;

/**
 * libvirt closes a push target after the job-completed event, then sends a block-job
 * event for its disk: only then is the file complete. `events` is the run's record of
 * this domain's backup block-job events, kept since before the job started.
 *
 * An event can fail to arrive (a registration libvirt refused, a daemon too busy to
 * deliver in time), so a disk also counts as released once libvirt no longer lists a
 * backup block job on it: libvirt drops that job only after it has detached the
 * target, and the job's own success was established by the caller.
 */
export async function waitForTargetsReleased(domain: Domain, events: readonly BlockJobPayload[], targets: string[], signal?: AbortSignal): Promise<void> {
  const releasedByEvent = (target: string, seen: readonly BlockJobPayload[]) => seen.some((e) => e.disk === target && e.status !== BlockJobStatus.READY);
  const releasedByQuery = new Set<string>();
  const isReleased = (target: string, seen: readonly BlockJobPayload[]) => releasedByQuery.has(target) || releasedByEvent(target, seen);
  const allReleased = (seen: readonly BlockJobPayload[]) => targets.every((t) => isReleased(t, seen)) && seen;
  const askLibvirt = async () => {
    for (const target of targets) {
      if (isReleased(target, events)) continue;
      const job = await domain.getBlockJobInfo(target).catch(async (error: unknown) => {
        // A domain that stopped has no QEMU left to hold the file.
        if (!(await domain.isActive().catch(() => true))) return null;
        throw error;
      });
      if (job === null || job.type !== BlockJobType.BACKUP) releasedByQuery.add(target);
    }
    return allReleased([...events]);
  };
  const timeoutMs = TARGET_RELEASE_TIMEOUT.ms;
  let seen: readonly BlockJobPayload[];
  try {
    seen = await domain.connection.waitFor('block-job', {
      // The event at hand counts whether or not the run's own listener has recorded it yet.
      match: (d, payload) => d.uuid === domain.uuid && payload.type === BlockJobType.BACKUP && allReleased([...events, payload]),
      check: askLibvirt,
      recheckMs: RELEASE_RECHECK_MS,
      timeoutMs,
      ...(signal !== undefined ? { signal } : {}),
      description: `libvirt to release the backup targets of ${targets.join(', ')}`,
    });
  } catch (error) {
    if (!(error instanceof Error && error.name === 'TimeoutError')) throw error;
    const held = targets.filter((t) => !isReleased(t, events));
    throw new BackupError(
      'JOB_FAILED',
      `the backup job on ${domain.name} ended, but libvirt did not release the backup target of ${held.join(', ')} within ${timeoutMs / 1000} s ` +
        '(no block-job event said the file was complete, and libvirt still listed the block job)',
      { cause: error },
    );
  }
  const failed = seen.find((e) => targets.includes(e.disk) && e.status !== BlockJobStatus.COMPLETED && e.status !== BlockJobStatus.READY);
  if (failed) throw new BackupError('JOB_FAILED', `backup of disk ${failed.disk} ended with status ${BlockJobStatus[failed.status] ?? failed.status}`);
}
