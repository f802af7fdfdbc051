// Runs `libvirt-backup` the way an operator or a cron job does: a child process with
// `--json`, read line by line. The soak decides the umask, the temporary and run
// directories of each run, and may signal the process at any moment.
import { spawn } from 'node:child_process';
import { join } from 'node:path';

import { threadStacks } from './thread-stacks.js';

/** Which build of the command runs: the compiled package (what `npm install` ships) or the sources through tsx. */
export type CliBuild = 'lib' | 'sources';

export interface CliEnvironment {
  repoRoot: string;
  build: CliBuild;
  /** TMPDIR of the command: where today's engine puts its NBD socket directories. */
  tmpDir: string;
  /** LIBVIRT_BACKUP_RUN_DIR: where a run keeps per-domain locks and sockets. */
  runDir: string;
}

export type CliEvent = Record<string, unknown> & { type: string };

export interface CliOutcome {
  args: string[];
  umask: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  events: CliEvent[];
  /** The final `result` line, if there was one. */
  result: CliEvent | undefined;
  /** The final `error` line, if there was one. */
  error: CliEvent | undefined;
  durationMs: number;
  /** When each type of event first came, in ms after the start. */
  firstSeen: ReadonlyMap<string, number>;
  /** Killed by the soak because it ran longer than its limit, or did not exit after its last line. */
  hung: boolean;
  /** Where a hung process's threads stood when it was killed (gdb, else the kernel's view). */
  stacks: string | undefined;
}

export interface StartOptions {
  umask?: number;
  /** SIGKILL after this long, and report the run as hung. */
  timeoutMs?: number;
  /**
   * SIGKILL when the process has not exited this long after its `result` or `error`
   * line, and report the run as hung: it has nothing left to do but exit. Default 60 s.
   */
  exitWithinMs?: number;
  /** More environment variables for the command. */
  env?: Record<string, string>;
}

/** Closing the connection and exiting takes well under a second, even emulated and under load. */
const EXIT_AFTER_LAST_LINE_MS = 60_000;

export class CliProcess {
  readonly events: CliEvent[] = [];
  readonly startedAt = Date.now();
  /** When each type of event first came, in ms after the start. */
  readonly firstSeen = new Map<string, number>();
  readonly done: Promise<CliOutcome>;
  readonly pid: number;
  #exited = false;
  #listeners: Array<(event: CliEvent) => void> = [];

  constructor(
    env: CliEnvironment,
    readonly args: string[],
    options: StartOptions = {},
  ) {
    const umask = options.umask ?? 0o022;
    const entry = env.build === 'lib' ? [join(env.repoRoot, 'lib/cli/main.js')] : ['--import=tsx', join(env.repoRoot, 'src/cli/main.ts')];
    // The umask is process-wide: set it for the fork only, spawn() forks synchronously.
    const previous = process.umask(umask);
    let child;
    try {
      child = spawn(process.execPath, [...entry, ...args], {
        cwd: env.repoRoot,
        // No bound on the exit: a command that cannot exit is a defect the soak must see
        // and take the threads' stacks of, not one the bound would end quietly.
        env: {
          ...process.env,
          TMPDIR: env.tmpDir,
          LIBVIRT_BACKUP_RUN_DIR: env.runDir,
          LIBVIRT_BACKUP_DEBUG: '1',
          LIBVIRT_BACKUP_EXIT_GRACE_MS: '0',
          ...options.env,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    } finally {
      process.umask(previous);
    }
    this.pid = child.pid!;
    let stdout = '';
    let stderr = '';
    let pending = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      pending += chunk;
      const lines = pending.split('\n');
      pending = lines.pop()!;
      for (const line of lines) this.#line(line);
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    let hung = false;
    let stacks: string | undefined;
    let exited = false;
    const killHung = async (why: string) => {
      if (hung || exited) return;
      hung = true;
      stacks = `${why}\n${await threadStacks(child.pid!)}`;
      child.kill('SIGKILL');
    };
    const timer =
      options.timeoutMs === undefined ? undefined : setTimeout(() => void killHung(`still running after ${options.timeoutMs} ms`), options.timeoutMs);
    let exitTimer: NodeJS.Timeout | undefined;
    const exitLimit = options.exitWithinMs ?? EXIT_AFTER_LAST_LINE_MS;
    this.#listeners.push((event) => {
      if (exitTimer !== undefined || (event.type !== 'result' && event.type !== 'error')) return;
      exitTimer = setTimeout(() => void killHung(`did not exit within ${exitLimit} ms of its ${event.type} line`), exitLimit);
    });
    this.done = new Promise<CliOutcome>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code, signal) => {
        exited = true;
        if (timer) clearTimeout(timer);
        if (exitTimer) clearTimeout(exitTimer);
        if (pending.trim() !== '') this.#line(pending);
        this.#exited = true;
        for (const listener of this.#listeners) listener({ type: '__exit' });
        resolve({
          args,
          umask,
          code,
          signal,
          stdout,
          stderr,
          events: this.events,
          result: this.events.findLast((event) => event.type === 'result'),
          error: this.events.findLast((event) => event.type === 'error'),
          durationMs: Date.now() - this.startedAt,
          firstSeen: this.firstSeen,
          hung,
          stacks,
        });
      });
    });
  }

  get exited(): boolean {
    return this.#exited;
  }

  #line(line: string): void {
    if (line.trim() === '') return;
    let event: CliEvent;
    try {
      event = JSON.parse(line) as CliEvent;
    } catch {
      // Not JSON on stdout under --json is itself a defect; keep it visible in the events.
      event = { type: '__not-json', line };
    }
    this.events.push(event);
    if (!this.firstSeen.has(event.type)) this.firstSeen.set(event.type, Date.now() - this.startedAt);
    for (const listener of this.#listeners) listener(event);
  }

  /** Resolves with the first event `accept` takes (looking at past events too), or null once the process ended without one. */
  waitForEvent(accept: (event: CliEvent) => boolean): Promise<CliEvent | null> {
    const seen = this.events.find(accept);
    if (seen) return Promise.resolve(seen);
    if (this.#exited) return Promise.resolve(null);
    return new Promise((resolve) => {
      const listener = (event: CliEvent) => {
        if (event.type === '__exit') {
          this.#listeners.splice(this.#listeners.indexOf(listener), 1);
          resolve(null);
        } else if (accept(event)) {
          this.#listeners.splice(this.#listeners.indexOf(listener), 1);
          resolve(event);
        }
      };
      this.#listeners.push(listener);
    });
  }

  /** Sends `signal` if the process still runs; true if it was sent. */
  kill(signal: NodeJS.Signals): boolean {
    if (this.#exited) return false;
    try {
      process.kill(this.pid, signal);
      return true;
    } catch {
      return false;
    }
  }
}

export function runCli(env: CliEnvironment, args: string[], options: StartOptions = {}): Promise<CliOutcome> {
  return new CliProcess(env, args, options).done;
}

/** The command line and everything it printed, for a failure report. */
export function describeOutcome(outcome: CliOutcome): string {
  const ended = outcome.hung ? 'hung, killed by the soak' : outcome.signal !== null ? `killed by ${outcome.signal}` : `exit ${outcome.code}`;
  return [
    `$ libvirt-backup ${outcome.args.join(' ')}   (umask ${outcome.umask.toString(8).padStart(3, '0')}, ${ended}, ${outcome.durationMs} ms)`,
    `stdout:\n${indent(outcome.stdout)}`,
    `stderr:\n${indent(outcome.stderr)}`,
    ...(outcome.stacks !== undefined ? [`threads when killed:\n${indent(outcome.stacks)}`] : []),
  ].join('\n');
}

function indent(text: string): string {
  const trimmed = text.trimEnd();
  return trimmed === ''
    ? '  (empty)'
    : trimmed
        .split('\n')
        .map((line) => `  ${line}`)
        .join('\n');
}
