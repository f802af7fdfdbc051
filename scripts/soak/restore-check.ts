// "Every point restores equal to its reference": `libvirt-backup restore` of one
// backup point, each disk compared byte for byte with the reference kept for it.
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';

import { describeOutcome, runCli } from './cli-process.js';
import { compareImages } from './image-compare.js';
import type { CheckLog, SoakScene } from './invariants.js';
import type { MirroredDomain } from './mirrored-domain.js';

export interface RestoreTally {
  restores: number;
  bytesCompared: number;
  mismatches: number;
}

export async function restoreMatchesReference(
  scene: SoakScene,
  domain: MirroredDomain,
  point: { backupId: string; snapshot: string },
  format: 'raw' | 'qcow2',
  scratchDir: string,
  log: CheckLog,
  tally: RestoreTally,
): Promise<boolean> {
  const to = await mkdtemp(join(scratchDir, `restore-${point.backupId}-`));
  try {
    const outcome = await runCli(scene.cli, ['restore', scene.setDir, '--to', to, '--at', point.backupId, '--format', format, '--json'], {
      timeoutMs: 600_000,
    });
    tally.restores += 1;
    if (outcome.code !== 0) {
      return log.record('restore-equals-reference', {
        expected: `restore of backup ${point.backupId} succeeds`,
        actual: `exit ${outcome.code ?? outcome.signal}`,
        output: describeOutcome(outcome),
      });
    }
    const wrong: string[] = [];
    for (const disk of domain.disks) {
      const comparison = await compareImages(
        { path: join(to, `${disk.target}.${format}`), format },
        { path: domain.snapshotPath(point.snapshot, disk.target), format: 'raw' },
      );
      tally.bytesCompared += comparison.bytes;
      if (!comparison.identical) wrong.push(`${disk.target}: ${comparison.detail}`);
    }
    tally.mismatches += wrong.length;
    return log.record(
      'restore-equals-reference',
      wrong.length === 0
        ? null
        : {
            expected: `backup ${point.backupId} restored as ${format} equals its reference byte for byte`,
            actual: wrong.join('; '),
            output: describeOutcome(outcome),
          },
    );
  } finally {
    await rm(to, { recursive: true, force: true });
  }
}
