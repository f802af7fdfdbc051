import { BackupSet, formatBytes, restore, restoreToPool } from '../../backup/index.js';
import type { RestoreArgs } from '../args.js';
import { ExitCode } from '../exit-codes.js';
import { closeConnection, openConnection } from '../libvirt-connection.js';
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
  const onProgress = ({ target, fraction }: { target: string; fraction: number }) => {
    const bytesTotal = sizes.get(target) ?? 0;
    output.event({ type: 'progress', target, bytesDone: Math.round(fraction * bytesTotal), bytesTotal });
  };
  if (args.pool !== undefined) return restoreIntoPool(set, args, args.pool, { output, signal }, onProgress);
  const result = await restore(set, {
    to: args.to!,
    at: args.at,
    disk: args.disk,
    format: args.format,
    overwrite: args.overwrite,
    verifyChecksums: args.verify,
    signal,
    onNotice: (message) => output.event({ type: 'notice', message }),
    onProgress,
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

async function restoreIntoPool(
  set: BackupSet,
  args: RestoreArgs,
  pool: string,
  { output, signal }: CommandContext,
  onProgress: (progress: { target: string; fraction: number }) => void,
): Promise<number> {
  const connection = await openConnection(args.uri, args);
  try {
    const result = await restoreToPool(set, {
      connection,
      pool,
      at: args.at,
      disk: args.disk,
      format: args.format,
      define: args.define,
      verifyChecksums: args.verify,
      signal,
      onNotice: (message) => output.event({ type: 'notice', message }),
      onProgress,
      reconnect: () => openConnection(args.uri, args),
    });
    const width = Math.max(...result.disks.map((disk) => disk.target.length));
    const text = [
      `restored backup ${result.backupId} of ${set.domain.name} into storage pool ${pool} on ${args.uri} as ${args.format}:`,
      ...result.disks.map(
        (disk) =>
          `  ${disk.target.padEnd(width)}  ${disk.volume}  (${disk.path}; sent ${formatBytes(disk.sent.dataBytes)} of data, ${formatBytes(disk.sent.holeBytes)} as holes)`,
      ),
      ...(result.domain === undefined ? [] : [`defined domain ${result.domain.name} (uuid ${result.domain.uuid}), not started`]),
    ].join('\n');
    output.result('restore', text, { ...result, pool, uri: args.uri });
    return ExitCode.OK;
  } finally {
    await closeConnection(connection);
  }
}
