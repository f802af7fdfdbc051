import { formatBytes, migrateStorage } from '../../backup/index.js';
import type { MigrateStorageArgs } from '../args.js';
import { ExitCode } from '../exit-codes.js';
import { closeConnection, openConnection } from '../libvirt-connection.js';
import type { CommandContext } from './context.js';

export async function migrateStorageCommand(args: MigrateStorageArgs, { output, signal }: CommandContext): Promise<number> {
  const connection = await openConnection(args.uri, args);
  try {
    const result = await migrateStorage({
      connection,
      domain: args.domain,
      to: args.pool !== undefined ? { pool: args.pool } : { dir: args.to! },
      signal,
      onEvent: (event) => {
        switch (event.type) {
          case 'progress':
            output.event({ type: 'progress', target: event.target, bytesDone: event.bytesCopied, bytesTotal: event.bytesTotal });
            break;
          case 'notice':
            output.event(event);
            break;
          case 'copy':
            output.event({ type: 'notice', message: `${event.target}: copying to ${event.destination}` });
            break;
          case 'ready':
            output.event({ type: 'notice', message: `${event.target}: the copy mirrors the disk` });
            break;
          case 'pivoted':
            output.event({ type: 'notice', message: `${event.target}: now runs on ${event.destination}` });
            break;
        }
      },
    });
    const width = Math.max(0, ...result.disks.map((disk) => disk.target.length));
    const text = [
      result.disks.length === 0
        ? `domain ${result.domain.name}: no disk runs on an overlay any more`
        : `domain ${result.domain.name} runs on its permanent storage:`,
      ...result.disks.map((disk) => `  ${disk.target.padEnd(width)}  ${disk.to}  (${formatBytes(disk.virtualSize)}; overlay ${disk.from} removed)`),
      ...(result.releasedSet !== null ? [`it no longer depends on ${result.releasedSet}`] : []),
    ].join('\n');
    output.result('migrate-storage', text, result);
    return ExitCode.OK;
  } finally {
    await closeConnection(connection);
  }
}
