import { exportPoint, formatBytes } from '../../backup/index.js';
import type { ExportArgs } from '../args.js';
import { ExitCode } from '../exit-codes.js';
import type { CommandContext } from './context.js';

/** Serves the disk until SIGINT or SIGTERM, which is this command's normal end. */
export async function exportCommand(args: ExportArgs, { output, signal }: CommandContext): Promise<number> {
  const listen = args.tcp !== undefined ? { ...args.tcp, tlsDir: args.tlsDir! } : args.socket !== undefined ? { socket: args.socket } : undefined;
  const served = await exportPoint({
    dir: args.dir,
    ...(args.at !== undefined ? { at: args.at } : {}),
    disk: args.disk,
    ...(listen ? { listen } : {}),
    signal,
  });
  output.event({
    type: 'export-ready',
    uri: served.uri,
    exportName: served.exportName,
    socket: served.socket,
    backupId: served.backupId,
    disk: served.disk,
    virtualSize: served.virtualSize,
  });
  if (!output.json) {
    process.stdout.write(
      `serving disk ${served.disk} of backup ${served.backupId} (${formatBytes(served.virtualSize)}) read-only at ${served.uri}\n` +
        `  e.g. guestfish --ro --format=raw -a ${served.uri} -i, or nbdfuse DIR ${served.uri}\n` +
        `stop with Ctrl-C\n`,
    );
  }
  await served.done;
  output.result('export', `export of ${served.disk} ended`, { uri: served.uri, backupId: served.backupId, disk: served.disk });
  return ExitCode.OK;
}
