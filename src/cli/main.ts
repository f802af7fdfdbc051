#!/usr/bin/env node
import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseCommandLine, type CommandArgs, type Invocation } from './args.js';
import type { CommandContext } from './commands/context.js';
import { debugEnabled, oneLine, operationOf, reportFor, type ErrorReport } from './error-report.js';
import { ExitCode } from './exit-codes.js';
import { commandHelp, overallHelp } from './help.js';
import { PROGRAM, createOutput, type OutputStreams } from './output.js';
import { SignalAbort, interruptionWording } from './signals.js';

/** Loaded on demand: `list` never loads the libvirt addon; `verify` and `restore` load it only to checksum files. */
async function runCommand(args: CommandArgs, context: CommandContext): Promise<number> {
  switch (args.command) {
    case 'backup':
      return (await import('./commands/backup.js')).backupCommand(args, context);
    case 'restore':
      return (await import('./commands/restore.js')).restoreCommand(args, context);
    case 'verify':
      return (await import('./commands/verify.js')).verifyCommand(args, context);
    case 'list':
      return (await import('./commands/list.js')).listCommand(args, context);
    case 'prune':
      return (await import('./commands/prune.js')).pruneCommand(args, context);
    case 'run':
      return (await import('./commands/run.js')).runFromBackupCommand(args, context);
    case 'migrate-storage':
      return (await import('./commands/migrate-storage.js')).migrateStorageCommand(args, context);
    case 'export':
      return (await import('./commands/export.js')).exportCommand(args, context);
  }
}

export async function main(argv: readonly string[], streams: OutputStreams = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  let invocation: Invocation;
  try {
    invocation = parseCommandLine(argv);
  } catch (error) {
    const report = reportFor(error);
    streams.stderr.write(`${PROGRAM}: ${oneLine(report.message)}\n`);
    if (debugEnabled() && error instanceof Error) streams.stderr.write(`${error.stack}\n`);
    return report.exitCode;
  }
  if (invocation.command === 'help') {
    streams.stdout.write(invocation.topic === undefined ? overallHelp() : commandHelp(invocation.topic));
    return ExitCode.OK;
  }
  if (invocation.command === 'version') {
    streams.stdout.write(`${PROGRAM} ${packageVersion()}\n`);
    return ExitCode.OK;
  }

  const args = invocation;
  const output = createOutput(args.json, streams);
  const signals = new SignalAbort({
    onAbort: (signal) => output.event({ type: 'notice', message: interruptionWording(args.command, signal).stopping }),
    onForcedExit: (signal, inMs) =>
      output.event({
        type: 'notice',
        message: `exiting ${inMs > 0 ? `in ${Math.ceil(inMs / 1000)} s` : 'now'}, before the cleanup is done: ${interruptionWording(args.command, signal).unfinishedCleanup}`,
      }),
  });
  try {
    const code = await runCommand(args, { output, signal: signals.signal });
    // An export runs until a signal ends it: that is its normal end.
    if (signals.received !== null && args.command !== 'export')
      output.event({ type: 'notice', message: `${signals.received} came too late to stop the ${args.command}; it completed` });
    return code;
  } catch (error) {
    const interruptedBy = signals.received;
    // Whatever failed while we were stopping (an aborted job, a qemu-img that got the
    // terminal's Ctrl-C too) is the interruption, and the exit code says so.
    const report: ErrorReport =
      interruptedBy === null
        ? reportFor(error, operationOf(args))
        : { exitCode: signals.exitCode!, code: 'INTERRUPTED', message: interruptionWording(args.command, interruptedBy).outcome };
    output.error(report, error);
    return report.exitCode;
  } finally {
    signals.dispose();
  }
}

function packageVersion(): string {
  const text = readFileSync(new URL('../../package.json', import.meta.url), 'utf8');
  return (JSON.parse(text) as { version: string }).version;
}

function invokedDirectly(): boolean {
  const entry = process.argv[1];
  if (entry === undefined) return false;
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

/**
 * How long the exit may take once the outcome is reported; `LIBVIRT_BACKUP_EXIT_GRACE_MS`
 * overrides it (0: wait however long it takes, for a hang to be examined).
 */
function exitGraceMs(): number | undefined {
  const text = process.env.LIBVIRT_BACKUP_EXIT_GRACE_MS;
  if (text === undefined || text === '') return undefined;
  const value = Number(text);
  return Number.isInteger(value) && value >= 0 ? value : undefined;
}

if (invokedDirectly()) {
  const code = await main(process.argv.slice(2));
  // Bounded only where libvirt's threads run: a command that never loaded the addon exits plainly.
  const { exitProcess } = await import('../index.js');
  const graceMs = exitGraceMs();
  exitProcess(code, graceMs === undefined ? {} : { graceMs });
}
