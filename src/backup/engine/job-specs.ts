// The backup and checkpoint definitions handed to libvirt for one run.

import { type BackupServer, type BackupSpec, type CheckpointSpec } from '../../xml/index.js';
import { type DiskPlan, type ExecuteContext } from './run-context.js';

export function checkpointSpecFor(context: ExecuteContext, disks: DiskPlan[], name: string, backupId: string): CheckpointSpec {
  const domainTargets = context.summary.disks.map((d) => d.target?.dev).filter((t): t is string => t !== undefined);
  return {
    name,
    description: `libvirt-backup ${context.plan.level} backup ${backupId}`,
    disks: domainTargets.map((target) =>
      disks.find((d) => d.target === target)?.tracksChanges ? { name: target, checkpoint: 'bitmap' as const } : { name: target, checkpoint: 'no' as const },
    ),
  };
}

/** `server`: where a pull job's NBD server listens (undefined: a push job). */
export function backupSpecFor(context: ExecuteContext, disks: DiskPlan[], server: BackupServer | undefined, scratchPaths: Map<string, string>): BackupSpec {
  const { plan, set } = context;
  const domainTargets = context.summary.disks.map((d) => d.target?.dev).filter((t): t is string => t !== undefined);
  const selected = new Set(disks.map((d) => d.target));
  const incremental = plan.level === 'full' ? undefined : plan.parent!.checkpoint!;
  const unselected = domainTargets.filter((t) => !selected.has(t)).map((name) => ({ name, backup: 'no' as const }));
  const fullMode = (disk: DiskPlan) => (incremental !== undefined && disk.level === 'full' ? { backupmode: 'full' as const } : {});
  if (server !== undefined) {
    return {
      mode: 'pull',
      ...(incremental !== undefined ? { incremental } : {}),
      server,
      disks: [
        ...disks.map((disk) => ({
          name: disk.target,
          backup: 'yes' as const,
          ...fullMode(disk),
          type: 'file' as const,
          scratch: { file: scratchPaths.get(disk.target)! },
        })),
        ...unselected,
      ],
    };
  }
  return {
    mode: 'push',
    ...(incremental !== undefined ? { incremental } : {}),
    disks: [
      ...disks.map((disk) => ({
        name: disk.target,
        backup: 'yes' as const,
        ...fullMode(disk),
        type: 'file' as const,
        target: { file: set.pathOf(disk.file) },
        driver: { type: 'qcow2' },
      })),
      ...unselected,
    ],
  };
}
