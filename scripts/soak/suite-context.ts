// What both suites share: where they work, how the command is run, the report, and
// how a failed check becomes a reported failure.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';

import type { CliEnvironment } from './cli-process.js';
import type { CheckLog } from './invariants.js';
import type { PrivateLibvirtd } from './private-libvirtd.js';
import { formatFailure, type SoakReport } from './report.js';

export interface SuiteContext {
  seed: number;
  report: SoakReport;
  /** The suite's private directory; removed at the end unless a failure asks to keep it. */
  workDir: string;
  cli: CliEnvironment;
  virtualization: 'auto' | 'qemu';
  /** Stop after this many failures: past that, later failures are mostly echoes. */
  maxFailures: number;
  /** Progress lines (stderr). */
  say(line: string): void;
  /** Set on SIGINT/SIGTERM: the suite stops after the current cycle or run, cleans up and reports. */
  stop: { requested: boolean };
  /** The suite's own libvirtd, which qemu:///system reaches inside the suite's mount namespace. */
  daemon: PrivateLibvirtd;
}

/** Moves a step's failed checks into the report, printing each in full; returns how many. */
export function reportFailures(context: SuiteContext, log: CheckLog, where: string, fault?: string): number {
  context.report.checks += log.checked.length;
  for (const failure of log.failures) {
    const full = { ...failure, where, ...(fault !== undefined ? { fault } : {}), checked: [...new Set(log.checked)] };
    context.report.failures.push(full);
    context.say(formatFailure(context.report.suite, context.seed, full));
  }
  const count = log.failures.length;
  log.checked.length = 0;
  log.failures.length = 0;
  return count;
}

/** True when the suite should not start another cycle or run. */
export function tooManyFailures(context: SuiteContext): boolean {
  return context.report.failures.length >= context.maxFailures || context.stop.requested;
}

export async function makeDirs(root: string, names: readonly string[]): Promise<Record<string, string>> {
  const dirs: Record<string, string> = {};
  for (const name of names) {
    dirs[name] = join(root, name);
    await mkdir(dirs[name]!, { recursive: true });
  }
  return dirs;
}
