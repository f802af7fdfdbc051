import { runFromBackup, type RunFromBackupResult } from '../../backup/index.js';
import type { RunArgs } from '../args.js';
import { ExitCode } from '../exit-codes.js';
import { closeConnection, openConnection } from '../libvirt-connection.js';
import type { CommandContext } from './context.js';

export async function runFromBackupCommand(args: RunArgs, { output, signal }: CommandContext): Promise<number> {
  const connection = await openConnection(args.uri, args);
  try {
    const started = performance.now();
    const result = await runFromBackup({
      dir: args.dir,
      ...(args.at !== undefined ? { at: args.at } : {}),
      name: args.name,
      connection,
      ...(args.overlayDir !== undefined ? { overlayDir: args.overlayDir } : {}),
      ...(args.overlayPool !== undefined ? { overlayPool: args.overlayPool } : {}),
      signal,
      onEvent: (event) => {
        if (event.type === 'notice') output.event(event);
      },
    });
    const seconds = (performance.now() - started) / 1000;
    output.result('run', describe(result, args.uri, seconds), { ...result, seconds: Math.round(seconds * 1000) / 1000 });
    return ExitCode.OK;
  } finally {
    await closeConnection(connection);
  }
}

function describe(result: RunFromBackupResult, uri: string, seconds: number): string {
  const { domain, access } = result;
  const width = Math.max(...result.overlays.map((overlay) => overlay.target.length));
  const lines = [
    `domain ${domain.name} (uuid ${domain.uuid}) runs from backup ${result.backupId} of ${result.set}, started in ${seconds.toFixed(1)} s`,
    ...result.overlays.map((overlay) => `  ${overlay.target.padEnd(width)}  ${overlay.path}  (on ${overlay.backingFile})`),
  ];
  const reach: string[] = [];
  if (access.console) reach.push(`console: virsh -c ${uri} console ${domain.name}`);
  for (const display of access.graphics) reach.push(`${display.type}: ${display.listen ?? 'localhost'}${display.port !== undefined ? `:${display.port}` : ''}`);
  for (const nic of access.interfaces)
    reach.push(`network: ${nic.type}${nic.source !== undefined ? ` ${nic.source}` : ''}${nic.mac !== undefined ? `, MAC ${nic.mac}` : ''}`);
  if (reach.length === 0) reach.push(`no console, display or network interface; virsh -c ${uri} dominfo ${domain.name}`);
  lines.push('reach it:', ...reach.map((line) => `  ${line}`));
  lines.push(`move it off the backup set while it runs: libvirt-backup migrate-storage ${domain.name} --to DIR`);
  if (!result.recorded) lines.push(`note: ${result.set} is read-only here, so nothing there records that ${domain.name} runs from it`);
  return lines.join('\n');
}
