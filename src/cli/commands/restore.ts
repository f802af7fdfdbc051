import { BackupSet } from '../../backup/index.js';
import { restore } from '../../backup/index.js';
import type { RestoreArgs } from '../args.js';
import { ExitCode } from '../exit-codes.js';
import type { CommandContext } from './context.js';

export async function restoreCommand(args: RestoreArgs, { output, signal }: CommandContext): Promise<number> {
  const set = await BackupSet.open(args.dir);
  const backup = args.at === undefined ? set.latest() : set.getBackup(args.at);
  // Sizes for the progress bars; restore itself reports what is wrong with the request.
  const disks = (backup?.disks ?? []).filter((disk) => args.disk === undefined || disk.target === args.disk);
  const sizes = new Map(disks.map((disk) => [disk.target, disk.virtualSize]));
  if (backup !== null && disks.length > 0) {
    output.event({
      type: 'restore-start',
      backupId: backup.id,
      disks: disks.map((disk) => ({
        target: disk.target,
        virtualSize: disk.virtualSize,
        chain: set.chainFor(disk.target, backup.id).map((link) => link.disk.file),
      })),
    });
  }
  const result = await restore(set, {
    to: args.to,
    at: args.at,
    disk: args.disk,
    format: args.format,
    overwrite: args.overwrite,
    verifyChecksums: args.verify,
    signal,
    onNotice: (message) => output.event({ type: 'notice', message }),
    onProgress: ({ target, fraction }) => {
      const bytesTotal = sizes.get(target) ?? 0;
      output.event({ type: 'progress', target, bytesDone: Math.round(fraction * bytesTotal), bytesTotal });
    },
  });
  const width = Math.max(...result.disks.map((disk) => disk.target.length));
  const text = [
    `restored backup ${result.backupId} of ${set.domain.name} as ${args.format}:`,
    ...result.disks.map(
      (disk) => `  ${disk.target.padEnd(width)}  ${disk.path}  (chain ${disk.chain.join(', ')}${disk.method === 'qemu-img' ? '; converted by qemu-img' : ''})`,
    ),
  ].join('\n');
  output.result('restore', text, result);
  return ExitCode.OK;
}
