// `backup --all`: many domains of many hypervisors in one run, each into its own set.
import { join } from 'node:path';

import { estimateBackup, runBackup, type BackupEstimate, type BackupEvent, type BackupResult } from '../../backup/index.js';
import { formatEstimate } from './backup-estimate.js';
import { formatBytes } from '../../common/format-bytes.js';
import { ListDomainsFlags, type Connection } from '../../index.js';
import type { AllDomainsArgs, BackupArgs } from '../args.js';
import { inBoundedLanes } from '../../common/bounded-lanes.js';
import { CliError, reportFor, type ErrorReport } from '../error-report.js';
import { ExitCode } from '../exit-codes.js';
import { assertBackupsPossible, closeConnection, openConnection } from '../libvirt-connection.js';
import { namePattern } from '../name-pattern.js';
import { formatDuration } from '../progress.js';
import type { CommandContext } from './context.js';
import { backupOptions } from './backup-options.js';

/** One hypervisor of the run: its connection, or why there is none. */
interface Host {
  uri: string;
  /** The hypervisor's own host name (the set directory's parent), or the URI when it could not be asked. */
  name: string;
  connection: Connection | null;
  error: ErrorReport | null;
}

/** One domain to back up. */
interface DomainTask {
  host: Host;
  domain: string;
  uuid: string;
  dest: string;
}

/** What happened to one domain (or, with `domain` null, to a whole host that could not be listed). */
export interface DomainOutcome {
  uri: string;
  host: string;
  domain: string | null;
  dest: string | null;
  status: 'ok' | 'failed' | 'not-started';
  durationMs: number;
  result?: BackupResult;
  /** With `--dry-run`: what the backup would do. */
  estimate?: BackupEstimate;
  error?: ErrorReport;
}

type AllArgs = BackupArgs & { all: AllDomainsArgs };

export async function backupAllCommand(args: AllArgs, { output, signal }: CommandContext): Promise<number> {
  const started = Date.now();
  const hosts = await Promise.all(args.all.uris.map((uri) => openHost(uri, args)));
  try {
    const { tasks, unlisted } = await planTasks(hosts, args, (message) => output.event({ type: 'notice', message }));
    if (tasks.length === 0 && unlisted.length === 0) {
      const which = args.all.match.length > 0 ? ` matching ${args.all.match.map((pattern) => `'${pattern}'`).join(', ')}` : '';
      throw new CliError('NOT_FOUND', ExitCode.USAGE, `no running domain${which} on ${args.all.uris.join(', ')}`);
    }
    output.event({
      type: 'notice',
      message: `backing up ${tasks.length} domain${tasks.length === 1 ? '' : 's'} of ${hosts.length} host${hosts.length === 1 ? '' : 's'}, ${args.all.parallel} at a time, into ${args.dest}`,
    });
    const outcomes = [
      ...unlisted,
      ...(await inBoundedLanes(tasks, args.all.parallel, (task) => backUpOne(task, args, signal, (event) => output.event(event)))),
    ];
    const text = summary(outcomes, args, Date.now() - started);
    if (signal.aborted) {
      // The interruption is the command's outcome (its exit code); what each domain got is said first.
      output.event({ type: 'notice', message: text });
      signal.throwIfAborted();
    }
    const failed = outcomes.filter((outcome) => outcome.status !== 'ok');
    output.result('backup', text, {
      domains: outcomes,
      succeeded: outcomes.length - failed.length,
      failed: failed.length,
    });
    return exitCodeOf(failed);
  } finally {
    for (const host of hosts) await closeConnection(host.connection);
  }
}

async function openHost(uri: string, args: BackupArgs): Promise<Host> {
  let connection: Connection | null = null;
  try {
    connection = await openConnection(uri, args);
    await assertBackupsPossible(connection, uri);
    return { uri, name: pathComponent(await connection.getHostname()), connection, error: null };
  } catch (error) {
    await closeConnection(connection);
    return { uri, name: uri, connection: null, error: reportFor(error) };
  }
}

/**
 * The running domains each host has that the patterns take, in the order of the hosts and
 * of the names. Two URIs that reach the same hypervisor (same host name, same domain
 * UUID) back each domain up once.
 */
async function planTasks(hosts: Host[], args: AllArgs, notice: (message: string) => void): Promise<{ tasks: DomainTask[]; unlisted: DomainOutcome[] }> {
  const patterns = args.all.match.map(namePattern);
  const tasks: DomainTask[] = [];
  const unlisted: DomainOutcome[] = [];
  const seen = new Map<string, string>();
  for (const host of hosts) {
    if (host.connection === null) {
      unlisted.push(hostFailure(host, host.error!));
      continue;
    }
    let domains: Array<{ name: string; uuid: string }>;
    try {
      domains = (await host.connection.listAllDomains(ListDomainsFlags.ACTIVE)).map((domain) => ({ name: domain.name, uuid: domain.uuid }));
    } catch (error) {
      unlisted.push(hostFailure(host, reportFor(error)));
      continue;
    }
    domains.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const { name, uuid } of domains) {
      if (patterns.length > 0 && !patterns.some((pattern) => pattern.test(name))) continue;
      const key = `${host.name}/${uuid}`;
      const first = seen.get(key);
      if (first !== undefined) {
        notice(`${host.uri}: ${name} is the domain already taken through ${first}; backed up once`);
        continue;
      }
      seen.set(key, host.uri);
      tasks.push({ host, domain: name, uuid, dest: join(args.dest, host.name, pathComponent(name)) });
    }
  }
  return { tasks, unlisted };
}

function hostFailure(host: Host, error: ErrorReport): DomainOutcome {
  return { uri: host.uri, host: host.name, domain: null, dest: null, status: 'failed', durationMs: 0, error };
}

/** One domain's backup; its failure is its outcome, never the run's. */
async function backUpOne(task: DomainTask, args: AllArgs, signal: AbortSignal, emit: (event: ScopedEvent) => void): Promise<DomainOutcome> {
  const base = { uri: task.host.uri, host: task.host.name, domain: task.domain, dest: task.dest };
  if (signal.aborted)
    return {
      ...base,
      status: 'not-started',
      durationMs: 0,
      error: { exitCode: ExitCode.INTERRUPTED, code: 'INTERRUPTED', message: 'not started: the run was interrupted' },
    };
  const started = Date.now();
  try {
    if (args.dryRun) {
      const estimate = await estimateBackup({ ...backupOptions(args), domain: task.uuid, dest: task.dest, connection: task.host.connection!, signal });
      emit({ type: 'notice', message: `${task.host.name}/${task.domain}: ${formatEstimate(estimate, task.dest)}`, host: task.host.name, domain: task.domain });
      return { ...base, status: 'ok', durationMs: Date.now() - started, estimate };
    }
    const result = await runBackup({
      ...backupOptions(args),
      // The same domain, wherever it is reached from, is known by its UUID.
      domain: task.uuid,
      dest: task.dest,
      connection: task.host.connection!,
      signal,
      onEvent: (event) => emit(scoped(event, task)),
    });
    emit({
      type: 'notice',
      message: `${task.host.name}/${task.domain}: backup ${result.backupId} (${result.level}) done`,
      host: task.host.name,
      domain: task.domain,
    });
    return { ...base, status: 'ok', durationMs: Date.now() - started, result };
  } catch (error) {
    const report = reportFor(error, `backup of domain '${task.domain}' on ${task.host.uri}`);
    emit({ type: 'notice', message: `${task.host.name}/${task.domain}: FAILED: ${report.message}`, host: task.host.name, domain: task.domain });
    return { ...base, status: 'failed', durationMs: Date.now() - started, error: report };
  }
}

/** A domain's event, said as whose it is: notices name it, and its disks are told apart from other domains' (`vm:vda`). */
export type ScopedEvent = BackupEvent & { host: string; domain: string };

function scoped(event: BackupEvent, task: DomainTask): ScopedEvent {
  const whose = { host: task.host.name, domain: task.domain };
  switch (event.type) {
    case 'notice':
      return { ...event, message: `${task.host.name}/${task.domain}: ${event.message}`, ...whose };
    case 'progress':
    case 'disk-done':
      return { ...event, target: `${task.domain}:${event.target}`, ...whose };
    case 'start':
      return { ...event, disks: event.disks.map((disk) => ({ ...disk, target: `${task.domain}:${disk.target}` })), ...whose };
    default:
      return { ...event, ...whose };
  }
}

/**
 * 0 when every domain was backed up; else the exit code the failures share, or 1 when
 * they differ (each one's is in the summary and in `--json`).
 */
function exitCodeOf(failed: DomainOutcome[]): number {
  if (failed.length === 0) return ExitCode.OK;
  const codes = new Set(failed.map((outcome) => outcome.error?.exitCode ?? ExitCode.FAILED));
  return codes.size === 1 ? [...codes][0]! : ExitCode.FAILED;
}

function summary(outcomes: DomainOutcome[], args: AllArgs, durationMs: number): string {
  const ok = outcomes.filter((outcome) => outcome.status === 'ok').length;
  const rows = outcomes.map((outcome) => [
    outcome.host,
    outcome.domain ?? '(host)',
    outcome.status === 'ok' ? 'ok' : outcome.status === 'failed' ? 'FAILED' : 'not started',
    outcome.result ? `${outcome.result.backupId} ${outcome.result.level}` : outcome.estimate ? `would be ${outcome.estimate.level}` : '-',
    outcome.result
      ? formatBytes(outcome.result.disks.reduce((sum, disk) => sum + disk.dataBytes, 0))
      : outcome.estimate
        ? outcome.estimate.totalBytes === null
          ? 'unknown'
          : formatBytes(outcome.estimate.totalBytes)
        : '-',
    formatDuration(outcome.durationMs),
    outcome.error ? `${outcome.error.code}: ${outcome.error.message}` : (outcome.dest ?? ''),
  ]);
  const header = ['HOST', 'DOMAIN', 'RESULT', 'BACKUP', 'COPIED', 'TIME', 'SET OR ERROR'];
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]!.length)));
  const line = (cells: string[]) => `  ${cells.map((cell, column) => (column === cells.length - 1 ? cell : cell.padEnd(widths[column]!))).join('  ')}`;
  return [
    `${args.dryRun ? 'dry run: estimated' : 'backed up'} ${ok} of ${outcomes.length} domain${outcomes.length === 1 ? '' : 's'} into ${args.dest} in ${formatDuration(durationMs)}${ok < outcomes.length ? `; ${outcomes.length - ok} FAILED` : ''}`,
    line(header),
    ...rows.map(line),
  ].join('\n');
}

/** A host or domain name as one directory name: no separator, never `.` or `..`. */
function pathComponent(name: string): string {
  const safe = name.replace(/[/\0]/g, '_');
  return safe === '' || safe === '.' || safe === '..' ? `_${safe}` : safe;
}
