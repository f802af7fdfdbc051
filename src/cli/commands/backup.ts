import { runBackup } from '../../backup/index.js';
import type { BackupResult } from '../../backup/index.js';
import { formatBytes } from '../../common/format-bytes.js';
import type { BackupArgs } from '../args.js';
import { ExitCode } from '../exit-codes.js';
import { assertBackupsPossible, openConnection } from '../libvirt-connection.js';
import { formatDuration } from '../progress.js';
import type { CommandContext } from './context.js';

export async function backupCommand(args: BackupArgs, { output, signal }: CommandContext): Promise<number> {
  const connection = await openConnection(args.uri, args);
  try {
    await assertBackupsPossible(connection, args.uri);
    const result = await runBackup({
      domain: args.domain,
      dest: args.dest,
      level: args.level,
      transport: args.transport,
      disks: args.disks,
      ...(args.scratchDir !== undefined ? { scratchDir: args.scratchDir } : {}),
      remote: {
        ...(args.nbdHost !== undefined ? { nbdHost: args.nbdHost } : {}),
        ...(args.nbdPorts !== undefined ? { nbdPorts: args.nbdPorts } : {}),
        tls: args.nbdTls,
        ...(args.tlsDir !== undefined ? { tlsDir: args.tlsDir } : {}),
      },
      destShared: args.destShared,
      connection,
      signal,
      onEvent: (event) => output.event(event),
    });
    output.result('backup', summary(args, result), result);
    return ExitCode.OK;
  } finally {
    await connection.close().catch(() => undefined);
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
