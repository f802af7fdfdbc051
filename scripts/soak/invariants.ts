// The promises checked after every run. Each check has a stable name (the report
// counts failures by it) and says what it expected and what it found. A leftover
// with an identity (a checkpoint, a file, a process) is reported once, when it is
// first seen, not again at every later check while it stays: the report counts
// problems, not echoes.
import { readdir } from 'node:fs/promises';

import { describeOutcome, runCli, type CliEnvironment } from './cli-process.js';
import { domainCheckpoints, domainJob, entriesUnder, processesUsing, type ProcessUse } from './host-state.js';
import { checkpointsNamed, fileModes, readManifest, unexpectedEntries } from './set-state.js';

export interface CheckFailure {
  check: string;
  expected: string;
  actual: string;
  /** Output of the commands involved (the run under test, verify...). */
  output?: string;
}

/** Leftovers already reported, per check. */
export class ReportedLeftovers {
  readonly #seen = new Map<string, Set<string>>();

  /** The items not reported before for `check`; they count as reported from now on. */
  fresh(check: string, items: readonly string[]): string[] {
    const seen = this.#seen.get(check) ?? new Set<string>();
    this.#seen.set(check, seen);
    const fresh = items.filter((item) => !seen.has(item));
    for (const item of fresh) seen.add(item);
    return fresh;
  }
}

/** Where a suite's runs leave traces. */
export interface SoakScene {
  uri: string;
  domainName: string;
  setDir: string;
  /** Sets of the same domain other than `setDir` (their checkpoints are not strays). */
  otherSetDirs: () => readonly string[];
  cli: CliEnvironment;
  /** A directory that must hold only the domain's disk images (the private daemon's image dir). */
  imageDir?: { path: string; allowed: readonly string[] };
  reported: ReportedLeftovers;
}

/** Collects the checks a step ran and those that failed. */
export class CheckLog {
  readonly checked: string[] = [];
  readonly failures: CheckFailure[] = [];

  record(check: string, failure: Omit<CheckFailure, 'check'> | null): boolean {
    this.checked.push(check);
    if (failure !== null) this.failures.push({ check, ...failure });
    return failure === null;
  }

  /** A failure for the leftovers among `items` not reported before. */
  recordLeftovers(scene: SoakScene, check: string, expected: string, items: readonly string[], describe = (fresh: string[]) => fresh.join(', ')): void {
    const fresh = scene.reported.fresh(check, items);
    this.record(check, fresh.length === 0 ? null : { expected, actual: describe(fresh) });
  }
}

export async function checkVerify(scene: SoakScene, log: CheckLog, mode: 'warnings-allowed' | 'clean'): Promise<void> {
  const outcome = await runCli(scene.cli, ['verify', scene.setDir, '--json'], { timeoutMs: 600_000 });
  const problems = (outcome.result?.['problems'] as Array<{ severity: string; message: string }> | undefined) ?? [];
  const name = mode === 'clean' ? 'verify-clean' : 'verify-passes';
  if (outcome.code !== 0) {
    log.record(name, {
      expected: 'verify exits 0',
      actual: `exit ${outcome.code ?? outcome.signal}: ${problems.map((p) => p.message).join('; ')}`,
      output: describeOutcome(outcome),
    });
    return;
  }
  if (mode === 'clean' && problems.length > 0) {
    log.record(name, {
      expected: 'verify reports no problem, not even a warning',
      actual: problems.map((p) => `${p.severity}: ${p.message}`).join('; '),
      output: describeOutcome(outcome),
    });
    return;
  }
  log.record(name, null);
}

export async function checkNoJob(scene: SoakScene, log: CheckLog): Promise<void> {
  const job = await domainJob(scene.uri, scene.domainName);
  log.record('no-domain-job', job === 'None' ? null : { expected: 'no libvirt job on the domain', actual: `job type ${job}` });
}

export async function checkNoStrayCheckpoint(scene: SoakScene, log: CheckLog): Promise<void> {
  const known = new Set<string>();
  for (const dir of [scene.setDir, ...scene.otherSetDirs()]) for (const name of checkpointsNamed((await readManifest(dir)).manifest)) known.add(name);
  const onDomain = await domainCheckpoints(scene.uri, scene.domainName);
  const strays = onDomain.filter((name) => name.startsWith('lvb-') && !known.has(name));
  log.recordLeftovers(
    scene,
    'no-stray-checkpoint',
    'every lvb- checkpoint of the domain is named by a backup of a set',
    strays,
    (fresh) => `not in any manifest: ${fresh.join(', ')} (domain has ${onDomain.join(', ')})`,
  );
}

export async function checkNoTempLeftovers(scene: SoakScene, log: CheckLog): Promise<void> {
  const temp = (await entriesUnder(scene.cli.tmpDir)).map((entry) => `${scene.cli.tmpDir}/${entry.path} (${entry.kind})`);
  // Lock files in the run directory are meant to stay; sockets and socket directories are not.
  const run = (await entriesUnder(scene.cli.runDir))
    .filter((entry) => entry.kind !== 'file')
    .map((entry) => `${scene.cli.runDir}/${entry.path} (${entry.kind})`);
  const imageDir = scene.imageDir;
  const images = imageDir ? (await readdir(imageDir.path)).filter((name) => !imageDir.allowed.includes(name)).map((name) => `${imageDir.path}/${name}`) : [];
  log.recordLeftovers(scene, 'no-temp-leftovers', 'no socket, socket directory, scratch or temporary file left', [...temp, ...run, ...images]);
}

export async function checkSetHoldsOnlyBackups(scene: SoakScene, log: CheckLog, options: { libvirtOwed?: boolean; jobMayRun?: boolean } = {}): Promise<void> {
  const { manifest } = await readManifest(scene.setDir);
  const extra = await unexpectedEntries(scene.setDir, manifest, options);
  log.recordLeftovers(
    scene,
    'set-holds-only-backups',
    'the set directory holds manifest.json and the files it names',
    extra,
    (fresh) => `also: ${fresh.join(', ')}`,
  );
}

/**
 * No process left behind: a command or qemu-img of ours may take a moment to exit after
 * the command itself (`graceMs` waits for that); a process holding a file of the set
 * open once the runs are over (QEMU still writing a push target) is reported at once.
 * `jobMayRun`: the run could not end its job (libvirtd gone), so the domain's QEMU may
 * still hold the job's files open, but never one that was deleted under it.
 */
export async function checkNoStrayProcess(scene: SoakScene, log: CheckLog, graceMs = 2000, jobMayRun = false): Promise<void> {
  const paths = [scene.setDir, ...scene.otherSetDirs(), scene.cli.tmpDir, scene.cli.runDir];
  const first = await processesUsing(paths);
  const owedToNextRun = (use: ProcessUse) => jobMayRun && use.command.includes(`guest=${scene.domainName},`) && !use.why.includes('(deleted)');
  const holders = first.filter((use) => use.by === 'open-file' && !owedToNextRun(use));
  const deadline = Date.now() + graceMs;
  let named = first.filter((use) => use.by === 'arguments');
  while (named.length > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    named = (await processesUsing(paths)).filter((use) => use.by === 'arguments');
  }
  log.recordLeftovers(
    scene,
    'no-stray-process',
    'no process left using the set or the run directories',
    [...holders, ...named].map((use) => `pid ${use.pid} (${use.command}): ${use.why}`),
  );
}

/** Which run wrote each file, so a mode that differs can be traced to its umask and transport. */
export class FileOrigins {
  readonly #origins = new Map<string, string>();

  set(file: string, origin: string): void {
    if (!this.#origins.has(file)) this.#origins.set(file, origin);
  }

  describe(file: string): string {
    const origin = this.#origins.get(file);
    return origin === undefined ? file : `${file} [${origin}]`;
  }
}

/**
 * A backup set's files should not depend on the umask or the transport of the run that
 * wrote them. The mode most files have is taken as the set's; each other mode is
 * reported once, with the files that have it (one defect, not one failure per file).
 */
export async function checkFileModes(scene: SoakScene, log: CheckLog, origins: FileOrigins): Promise<void> {
  const { manifest } = await readManifest(scene.setDir);
  const modes = [...(await fileModes(scene.setDir, manifest))];
  if (modes.length === 0) return;
  const octal = (mode: number) => mode.toString(8).padStart(4, '0');
  const counts = new Map<number, number>();
  for (const [, mode] of modes) counts.set(mode, (counts.get(mode) ?? 0) + 1);
  // Map order is first-seen order, so a tie goes to the oldest file's mode.
  const usual = [...counts].reduce((best, entry) => (entry[1] > best[1] ? entry : best))[0];
  const odd = [...new Set(modes.filter(([, mode]) => mode !== usual).map(([, mode]) => octal(mode)))];
  log.recordLeftovers(
    scene,
    'file-modes-consistent',
    `every backup file has the same mode whatever the umask or transport of its run (${counts.get(usual)} of ${modes.length} have ${octal(usual)})`,
    odd,
    (fresh) =>
      fresh
        .map(
          (mode) =>
            `${mode}: ${modes
              .filter(([, m]) => octal(m) === mode)
              .map(([file]) => origins.describe(file))
              .join(', ')}`,
        )
        .join('; '),
  );
}

/**
 * The full set of "nothing left behind" checks. `jobMayRun`: the command said it lost
 * libvirtd while its job ran, so the job and the files it writes are owed by the next run.
 */
export async function checkNothingLeft(
  scene: SoakScene,
  log: CheckLog,
  options: { libvirt: boolean; files: boolean; processGraceMs?: number; jobMayRun?: boolean },
): Promise<void> {
  if (options.libvirt) {
    await checkNoJob(scene, log);
    await checkNoStrayCheckpoint(scene, log);
  }
  const jobMayRun = options.jobMayRun === true;
  if (options.files) await checkSetHoldsOnlyBackups(scene, log, { libvirtOwed: !options.libvirt, jobMayRun });
  await checkNoTempLeftovers(scene, log);
  await checkNoStrayProcess(scene, log, options.processGraceMs, jobMayRun);
}
