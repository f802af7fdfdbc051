import { estimateBackup, runBackup } from '../../backup/index.js';
import { formatEstimate } from './backup-estimate.js';
import type { BackupEvent, BackupResult } from '../../backup/index.js';
import { backupOptions } from './backup-options.js';
import { formatBytes } from '../../common/format-bytes.js';
import type { BackupArgs } from '../args.js';
import { ExitCode } from '../exit-codes.js';
import { assertBackupsPossible, closeConnection, openConnection } from '../libvirt-connection.js';
import { formatDuration } from '../progress.js';
import type { CommandContext } from './context.js';

export async function backupCommand(args: BackupArgs, context: CommandContext): Promise<number> {
  if (args.all !== undefined) return (await import('./backup-all.js')).backupAllCommand({ ...args, all: args.all }, context);
  const { output, signal } = context;
  const connection = await openConnection(args.uri, args);
  try {
    await assertBackupsPossible(connection, args.uri);
    const options = { ...backupOptions(args), domain: args.domain, dest: args.dest, connection, signal, onEvent: (event: BackupEvent) => output.event(event) };
    if (args.dryRun) {
      const estimate = await estimateBackup(options);
      output.result('backup', formatEstimate(estimate, args.dest), { dryRun: true, ...estimate });
      return ExitCode.OK;
    }
    const result = await runBackup(options);
    output.result('backup', summary(args, result), result);
    return ExitCode.OK;
  } finally {
    await closeConnection(connection);
  }
}

function summary(args: BackupArgs, result: BackupResult): string {
  const copied = result.disks.reduce((sum, disk) => sum + disk.dataBytes, 0);
  const width = Math.max(...result.disks.map((disk) => disk.target.length));
  return [
    `backup ${result.backupId} of ${args.domain} in ${args.dest}: ${result.level} (${result.transport}), ${formatBytes(copied)} copied in ${formatDuration(result.durationMs)}, checkpoint ${result.checkpoint}`,
    ...result.disks.map((disk) => `  ${disk.target.padEnd(width)}  ${disk.level.padEnd(4)}  ${disk.file}  ${formatBytes(disk.dataBytes)}`),
  ].join('\n');
}
