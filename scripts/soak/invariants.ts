// The promises checked after every run. Each check has a stable name (the report
// counts failures by it) and says what it expected and what it found.
import { readdir } from 'node:fs/promises';

import { describeOutcome, runCli, type CliEnvironment } from './cli-process.js';
import { domainCheckpoints, domainJob, entriesUnder, processesUsing } from './host-state.js';
import { checkpointsNamed, fileModes, readManifest, unexpectedEntries } from './set-state.js';

export interface CheckFailure {
  check: string;
  expected: string;
  actual: string;
  /** Output of the commands involved (the run under test, verify...). */
  output?: string;
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
}

export async function checkVerify(scene: SoakScene, log: CheckLog, mode: 'warnings-allowed' | 'clean'): Promise<void> {
  const outcome = await runCli(scene.cli, ['verify', scene.setDir, '--json'], { timeoutMs: 600_000 });
  const problems = (outcome.result?.['problems'] as Array<{ severity: string; message: string }> | undefined) ?? [];
  const name = mode === 'clean' ? 'verify-clean' : 'verify-passes';
  if (outcome.code !== 0) {
    log.record(name, { expected: 'verify exits 0', actual: `exit ${outcome.code ?? outcome.signal}: ${problems.map((p) => p.message).join('; ')}`, output: describeOutcome(outcome) });
    return;
  }
  if (mode === 'clean' && problems.length > 0) {
    log.record(name, { expected: 'verify reports no problem, not even a warning', actual: problems.map((p) => `${p.severity}: ${p.message}`).join('; '), output: describeOutcome(outcome) });
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
  log.record(
    'no-stray-checkpoint',
    strays.length === 0 ? null : { expected: 'every lvb- checkpoint of the domain is named by a backup of the set', actual: `not in any manifest: ${strays.join(', ')} (domain has ${onDomain.join(', ')})` },
  );
}

export async function checkNoTempLeftovers(scene: SoakScene, log: CheckLog): Promise<void> {
  const temp = (await entriesUnder(scene.cli.tmpDir)).map((entry) => `${scene.cli.tmpDir}/${entry.path} (${entry.kind})`);
  // Lock files in the run directory are meant to stay; sockets and socket directories are not.
  const run = (await entriesUnder(scene.cli.runDir)).filter((entry) => entry.kind !== 'file').map((entry) => `${scene.cli.runDir}/${entry.path} (${entry.kind})`);
  const images = scene.imageDir ? (await readdir(scene.imageDir.path)).filter((name) => !scene.imageDir!.allowed.includes(name)).map((name) => `${scene.imageDir!.path}/${name}`) : [];
  const leftovers = [...temp, ...run, ...images];
  log.record('no-temp-leftovers', leftovers.length === 0 ? null : { expected: 'no socket, socket directory, scratch or temporary file left', actual: leftovers.join(', ') });
}

export async function checkSetHoldsOnlyBackups(scene: SoakScene, log: CheckLog): Promise<void> {
  const { manifest } = await readManifest(scene.setDir);
  const extra = await unexpectedEntries(scene.setDir, manifest);
  log.record('set-holds-only-backups', extra.length === 0 ? null : { expected: 'the set directory holds manifest.json and the files it names', actual: `also: ${extra.join(', ')}` });
}

/** Processes may take a moment to go after the command exits; `graceMs` waits for that. */
export async function checkNoStrayProcess(scene: SoakScene, log: CheckLog, graceMs = 2000): Promise<void> {
  const paths = [scene.setDir, ...scene.otherSetDirs(), scene.cli.tmpDir, scene.cli.runDir];
  const deadline = Date.now() + graceMs;
  let uses = await processesUsing(paths);
  while (uses.length > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    uses = await processesUsing(paths);
  }
  log.record(
    'no-stray-process',
    uses.length === 0 ? null : { expected: 'no process left using the set or the run directories', actual: uses.map((use) => `pid ${use.pid} (${use.command}): ${use.why}`).join('; ') },
  );
}

/** Which run wrote each file, so a mode that differs can be traced to its umask and transport. */
export class FileOrigins {
  readonly #origins = new Map<string, string>();
  /** Files whose odd mode was already reported. */
  readonly reported = new Set<string>();

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
 * wrote them: each file whose mode differs from the oldest file's is reported, once.
 */
export async function checkFileModes(scene: SoakScene, log: CheckLog, origins: FileOrigins): Promise<void> {
  const { manifest } = await readManifest(scene.setDir);
  const modes = [...(await fileModes(scene.setDir, manifest))];
  const octal = (mode: number) => mode.toString(8).padStart(4, '0');
  const [first] = modes;
  const odd = modes.filter(([file, mode]) => first !== undefined && mode !== first[1] && !origins.reported.has(file));
  for (const [file] of odd) origins.reported.add(file);
  log.record(
    'file-modes-consistent',
    odd.length === 0
      ? null
      : {
          expected: `every backup file has the same mode whatever the umask or transport of its run; the oldest, ${origins.describe(first![0])}, has ${octal(first![1])}`,
          actual: odd.map(([file, mode]) => `${origins.describe(file)} has ${octal(mode)}`).join(', '),
        },
  );
}

/** The full set of "nothing left behind" checks. */
export async function checkNothingLeft(scene: SoakScene, log: CheckLog, options: { libvirt: boolean; files: boolean; processGraceMs?: number }): Promise<void> {
  if (options.libvirt) {
    await checkNoJob(scene, log);
    await checkNoStrayCheckpoint(scene, log);
  }
  if (options.files) {
    await checkSetHoldsOnlyBackups(scene, log);
  }
  await checkNoTempLeftovers(scene, log);
  await checkNoStrayProcess(scene, log, options.processGraceMs);
}

