// The fault-injection suite: a loop of backups (full, inc, diff, auto; pull and push)
// of a domain whose disks are written between runs, each run struck by one fault at a
// random moment. After each faulted run: the manifest is the old one or has exactly
// one complete backup more, verify passes, and what the command promised to clean up
// at once is clean. Then a plain backup must work, after which nothing at all may be
// left over (job, checkpoint, socket, temporary file, process), and every new point
// restores equal to its reference.
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';

import type { BackupRecord, BackupTransport } from '../../src/backup/index.js';
import { tryRun } from '../../test/helpers/process.js';
import { BackupPoints } from './backup-points.js';
import { CliProcess, describeOutcome, runCli, type CliOutcome } from './cli-process.js';
import { LoopExt4 } from './destination-fs.js';
import { FAULT_KINDS, type FaultKind, type FaultScene, type Injection, type PlannedFault } from './faults/index.js';
import { RunTimings } from './faults/trigger.js';
import { planWrites } from './guest-writes.js';
import { domainJob } from './host-state.js';
import { checkFileModes, checkNothingLeft, checkVerify, CheckLog, FileOrigins, ReportedLeftovers, type SoakScene } from './invariants.js';
import { LibvirtLink } from './libvirt-link.js';
import { MirroredDomain } from './mirrored-domain.js';
import { PhaseTimer } from './phase-timer.js';
import { formatBytes } from '../../src/common/format-bytes.js';
import { restoreMatchesReference } from './restore-check.js';
import { Rng } from './seeded-random.js';
import { addedBackups, manifestChange, readManifest, type ManifestSnapshot } from './set-state.js';
import { makeDirs, reportFailures, tooManyFailures, type SuiteContext } from './suite-context.js';
import { createWriteSources } from './write-sources.js';

export interface FaultsSettings {
  runs: number;
  /** Only these kinds (default: all). */
  kinds: string[] | undefined;
}

const UMASKS = [0o022, 0o077, 0o002, 0o027] as const;
const LEVELS = ['full', 'inc', 'diff', 'auto'] as const;
/** Far beyond what a backup of these small disks takes: past it, the command hangs. */
const FAULTED_TIMEOUT_MS = 180_000;
const BACKUP_TIMEOUT_MS = 180_000;
const DESTINATION_MIB = 1024;
/** A prune keeps the destination from filling up by itself over many runs. */
const PRUNE_ABOVE_USED = 0.45;
const REFERENCE_WINDOW = 8;

const octal = (mode: number) => mode.toString(8).padStart(3, '0');

export async function runFaultsSuite(context: SuiteContext, settings: FaultsSettings): Promise<void> {
  const { report, seed } = context;
  const kinds = selectKinds(settings.kinds);
  const setup = Rng.derive(seed, 'setup');
  const sizesMiB = [setup.int(64, 128), setup.int(64, 128)];
  const dirs = await makeDirs(context.workDir, ['refs', 'restore', 'sources', 'other-set']);
  context.say(
    `faults: ${kinds.map((kind) => kind.name).join(', ')}; disks ${sizesMiB.map((size) => `${size} MiB`).join(', ')}; the set on a ${DESTINATION_MIB} MiB loop-mounted ext4`,
  );

  const daemon = context.daemon;
  let destination: LoopExt4 | undefined;
  let domain: MirroredDomain | undefined;
  const link = new LibvirtLink();
  try {
    destination = await LoopExt4.create(join(context.workDir, 'destination.ext4'), join(context.workDir, 'destination'), DESTINATION_MIB);
    const sources = await createWriteSources(dirs['sources']!, seed, 3);
    domain = await MirroredDomain.create(link, {
      label: 'soak-faults',
      sizesMiB,
      virtualization: context.virtualization,
      referenceDir: dirs['refs']!,
      sources,
    });
    const setDir = join(destination.mountPoint, 'set');
    const vm = domain;
    const faultScene: FaultScene = {
      domain: vm,
      link,
      daemon,
      destination,
      setDir,
      otherSetDir: dirs['other-set']!,
      cli: context.cli,
      backupArgs: (dest, level, transport) => ['backup', vm.name, '--dest', dest, '--level', level, '--transport', transport, '--json'],
    };
    const scene: SoakScene = {
      uri: link.uri,
      domainName: vm.name,
      setDir,
      otherSetDirs: () => [faultScene.otherSetDir],
      cli: context.cli,
      imageDir: { path: daemon.imageDir, allowed: vm.disks.map((disk) => disk.image.split('/').at(-1)!) },
      reported: new ReportedLeftovers(),
    };
    const state: RunState = { points: new BackupPoints(vm, REFERENCE_WINDOW), origins: new FileOrigins(), timings: new RunTimings() };

    // A first full backup, so that inc and diff have a chain to start from.
    await vm.apply(planWrites(Rng.derive(seed, 'baseline'), vm.disks, sources.length));
    await vm.snapshot('r0');
    const baseline = new CheckLog();
    await plainBackup(context, faultScene, scene, state, 'r0', 'full', 'pull', Rng.derive(seed, 'baseline'), baseline);
    reportFailures(context, baseline, 'baseline full backup');

    for (let runNumber = 1; runNumber <= settings.runs && !tooManyFailures(context); runNumber += 1) {
      const round = Math.floor((runNumber - 1) / kinds.length);
      const order = shuffled(kinds, Rng.derive(seed, 'order', round));
      const kind = order[(runNumber - 1) % kinds.length]!;
      await faultedRun(context, faultScene, scene, state, kind, runNumber, sources.length);
      report.runs += 1;
    }

    const log = new CheckLog();
    await checkVerify(scene, log, 'clean');
    const ids = ((await readManifest(setDir)).manifest?.backups ?? []).map((backup) => backup.id);
    for (const point of state.points.withReference(ids)) await restoreMatchesReference(scene, vm, point, 'raw', dirs['restore']!, log, report);
    reportFailures(context, log, 'end of the suite');
  } finally {
    await domain?.cleanup().catch((error: unknown) => context.say(`cleanup of the domain failed: ${String(error)}`));
    await link.drop();
    await destination?.unmount();
  }
}

interface RunState {
  points: BackupPoints;
  origins: FileOrigins;
  timings: RunTimings;
}

function selectKinds(names: string[] | undefined): FaultKind[] {
  if (names === undefined) return [...FAULT_KINDS];
  const unknown = names.filter((name) => !FAULT_KINDS.some((kind) => kind.name === name));
  if (unknown.length > 0) throw new Error(`unknown fault kind ${unknown.join(', ')} (kinds: ${FAULT_KINDS.map((kind) => kind.name).join(', ')})`);
  return FAULT_KINDS.filter((kind) => names.includes(kind.name));
}

/** Every kind once per round, in an order of its own each round. */
function shuffled<T>(items: readonly T[], rng: Rng): T[] {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i -= 1) {
    const j = rng.int(0, i);
    [copy[i], copy[j]] = [copy[j]!, copy[i]!];
  }
  return copy;
}

function ended(outcome: CliOutcome): string {
  return outcome.hung
    ? 'hung (killed by the soak)'
    : outcome.signal !== null
      ? `killed by ${outcome.signal}`
      : `exit ${outcome.code}${outcome.error ? ` (${String(outcome.error['code'])}: ${String(outcome.error['message'])})` : ''}`;
}

/** A fault-injected backup and what the checks need about it. */
interface FaultedBackup {
  planned: PlannedFault;
  fault: string;
  outcome: CliOutcome;
  injection: Injection;
  others: { dest: string; outcome: CliOutcome }[];
  before: ManifestSnapshot;
  after: ManifestSnapshot;
  setUnchanged: boolean;
}

async function faultedRun(
  context: SuiteContext,
  faultScene: FaultScene,
  scene: SoakScene,
  state: RunState,
  kind: FaultKind,
  runNumber: number,
  sourceCount: number,
): Promise<void> {
  const rng = Rng.derive(context.seed, 'run', runNumber);
  const timer = new PhaseTimer();
  const log = new CheckLog();
  const where = `run ${runNumber}`;

  const writes = planWrites(rng, faultScene.domain.disks, sourceCount, 4);
  await faultScene.domain.apply(writes);
  context.report.guestWrites += writes.length;
  context.report.guestBytesWritten += writes.reduce((sum, write) => sum + write.length, 0);
  const snapshot = `r${runNumber}`;
  await faultScene.domain.snapshot(snapshot);
  timer.mark('writes');

  const faulted = await backUpWithFault(context, faultScene, scene, state, kind, rng);
  await kind.repair(faultScene, faulted.planned, faulted.injection, log);
  timer.mark('faulted backup');
  const added = judgeFaultedBackup(kind, faulted, scene, state, log, snapshot, runNumber);
  if (!faulted.planned.nextAtOnce) {
    await checkVerify(scene, log, 'warnings-allowed');
    const { outcome } = faulted;
    const handledItself = outcome.signal === null && !outcome.hung;
    // Without libvirtd the command cannot know whether its job still runs: it leaves the
    // files QEMU may be writing to the next run, which ends the job first.
    const jobMayRun = outcome.error?.['code'] === 'DAEMON_LOST';
    if (handledItself) await checkNothingLeft(scene, log, { ...kind.immediateCleanup, processGraceMs: 3000, jobMayRun });
  }
  const faultedFailures = reportFailures(context, log, `${where}, right after the faulted backup`, faulted.fault);
  timer.mark('checks');

  // The next backup must work and leave nothing behind, whatever the fault left. It is
  // `auto`, as a nightly job's would be: a fault may legitimately break the chain (a
  // domain destroyed leaves its bitmaps inconsistent), and then only a full can follow.
  const recoveryLevel = 'auto';
  const recovery = await plainBackup(
    context,
    faultScene,
    scene,
    state,
    snapshot,
    recoveryLevel,
    rng.pick(['pull', 'push'] as const),
    rng,
    log,
    added.map((record) => record.id),
  );
  const recoveryFailures = reportFailures(context, log, `${where}, the backup after the fault`, faulted.fault);
  timer.mark('next backup');

  await tidyAfterRun(context, faultScene, scene, state, rng, runNumber, log, faulted.fault);
  const failed = faultedFailures + recoveryFailures;
  context.say(
    `run ${runNumber}/${context.report.settings['runs']}: ${faulted.fault} -> ${ended(faulted.outcome)}${faulted.injection.landed ? '' : ' (fault came after the end)'}, ${faulted.injection.detail}; ` +
      `${added.length > 0 ? `kept ${added.map((record) => record.id).join(', ')}; ` : ''}next ${recoveryLevel}: ${recovery}${failed > 0 ? `; ${failed} FAILED` : ''} [${timer}]`,
  );
}

/** The backup command with the fault drawn for this run injected into it (and any second command the fault starts). */
async function backUpWithFault(
  context: SuiteContext,
  faultScene: FaultScene,
  scene: SoakScene,
  state: RunState,
  kind: FaultKind,
  rng: Rng,
): Promise<FaultedBackup> {
  const drawnLevel = rng.pick(LEVELS);
  const drawnTransport: BackupTransport = rng.pick(kind.transports);
  const umask = rng.pick(UMASKS);
  const planned = kind.plan(rng, state.timings);
  const level = planned.level ?? drawnLevel;
  const transport = planned.transport ?? drawnTransport;
  const fault = `${kind.name}: ${kind.describe(planned)}; ${level}/${transport} backup, umask ${octal(umask)}`;

  const before = await readManifest(scene.setDir);
  const entriesBefore = (await readdir(scene.setDir)).sort().join('/');
  const env = (await kind.prepare?.(faultScene, planned)) ?? {};
  const cli = new CliProcess(context.cli, faultScene.backupArgs(scene.setDir, level, transport), { umask, timeoutMs: FAULTED_TIMEOUT_MS, env });
  const injectionDone = kind.inject(faultScene, planned, cli);
  const outcome = await cli.done;
  let injection: Injection;
  try {
    injection = await injectionDone;
  } catch (error) {
    throw new Error(`injecting ${fault} failed: ${(error as Error).message}`, { cause: error });
  }
  const others = await Promise.all((injection.others ?? []).map(async (other) => ({ dest: other.dest, outcome: await other.outcome })));
  context.report.backups += 1 + others.length;
  for (const other of others) injection.detail += ` (${ended(other.outcome)})`;
  context.report.countFault(kind.name, injection.landed);
  const after = await readManifest(scene.setDir);
  const setUnchanged = (await readdir(scene.setDir)).sort().join('/') === entriesBefore && manifestChange(before, after).kind === 'unchanged';
  return { planned, fault, outcome, injection, others, before, after, setUnchanged };
}

/** Right after the faulted run: its exit, any second command's, and the manifest; the backups it added become points. */
function judgeFaultedBackup(
  kind: FaultKind,
  { outcome, injection, others, before, after, setUnchanged }: FaultedBackup,
  scene: SoakScene,
  state: RunState,
  log: CheckLog,
  snapshot: string,
  runNumber: number,
): BackupRecord[] {
  const expected = kind.expectedExit(
    outcome,
    injection,
    setUnchanged,
    others.map((other) => other.outcome),
  );
  log.record('cli-exit', expected === null ? null : { expected, actual: ended(outcome), output: describeOutcome(outcome) });
  for (const other of others) {
    const harmless = (other.outcome.code === 0 && other.outcome.result !== undefined) || (other.outcome.code === 1 && other.outcome.error !== undefined);
    log.record(
      'second-backup-fails-cleanly',
      harmless
        ? null
        : { expected: 'the second backup exits 0, or 1 with an error line', actual: ended(other.outcome), output: describeOutcome(other.outcome) },
    );
  }
  const sameSetSuccesses = others.filter((other) => other.dest === scene.setDir && other.outcome.code === 0).length;
  const added = checkManifest(log, before, after, outcome, sameSetSuccesses);
  for (const record of added) {
    state.points.add(record.id, snapshot);
    for (const disk of record.disks) state.origins.set(disk.file, `backup ${record.id}, ${record.transport}, faulted run ${runNumber}`);
  }
  return added;
}

/** Between runs: the domain's job settled, a prune when the set is full, the model checked now and then. */
async function tidyAfterRun(
  context: SuiteContext,
  faultScene: FaultScene,
  scene: SoakScene,
  state: RunState,
  rng: Rng,
  runNumber: number,
  log: CheckLog,
  fault: string,
): Promise<void> {
  await settleDomainJob(scene, context);
  await pruneIfFull(context, faultScene, scene, state, rng, runNumber);
  const ids = ((await readManifest(scene.setDir)).manifest?.backups ?? []).map((backup) => backup.id);
  await state.points.trim(ids);
  if (runNumber % 5 !== 0) return;
  const wrong = await faultScene.domain.modelMismatches();
  log.record(
    'model-in-step',
    wrong.length === 0 ? null : { expected: 'the running disks equal their references (else the soak, not the product, is wrong)', actual: wrong.join('; ') },
  );
  reportFailures(context, log, `run ${runNumber}`, fault);
}

/**
 * The manifest after a faulted run: the old one byte for byte, or the old backups
 * unchanged plus complete new ones: one per command that succeeded on this set, and
 * possibly one more if the command was killed (it may have died right after its commit).
 */
function checkManifest(log: CheckLog, before: ManifestSnapshot, after: ManifestSnapshot, outcome: CliOutcome, otherSuccesses: number): BackupRecord[] {
  const succeeded = (outcome.code === 0 ? 1 : 0) + otherSuccesses;
  const mayHaveCommitted = outcome.signal !== null || outcome.hung ? 1 : 0;
  const result = addedBackups(before, after);
  const count = 'added' in result ? result.added.length : -1;
  // Without a new backup, the old manifest byte for byte: not even rewritten.
  const rewritten = count === 0 && before.bytes !== null && after.bytes !== null && !before.bytes.equals(after.bytes);
  const ok = count >= succeeded && count <= succeeded + mayHaveCommitted && !rewritten;
  const expected =
    succeeded + mayHaveCommitted === 0
      ? 'the old manifest, byte for byte'
      : `the old backups unchanged plus ${succeeded}${mayHaveCommitted ? ` or ${succeeded + 1}` : ''} new`;
  const actual = 'wrong' in result ? result.wrong : rewritten ? 'the same backups, but manifest.json was rewritten' : `${count} new backup(s)`;
  log.record('manifest-old-or-complete-new', ok ? null : { expected, actual, output: describeOutcome(outcome) });
  return ok && 'added' in result ? result.added : [];
}

/**
 * A backup without a fault, then every "nothing left" check, the file modes, and a
 * restore of each new point (and of `alsoRestore`, points the faulted run kept).
 */
/** The command refused because libvirt keeps a job only a libvirtd restart (or, failing that, the domain's) ends, and said so. */
function advisesLibvirtdRestart(outcome: CliOutcome): boolean {
  return outcome.error?.['code'] === 'DOMAIN_BUSY' && /restart libvirtd once more/.test(String(outcome.error['message']));
}

async function restartLibvirtd(faultScene: FaultScene): Promise<void> {
  await faultScene.daemon.kill();
  await faultScene.daemon.startLibvirtd();
  await faultScene.link.drop();
}

/**
 * libvirt 9.0 can keep a job it no longer describes, which a restart of libvirtd
 * usually ends and otherwise only the domain's stop (README); the command says so,
 * and the operator's remedies are applied here in that order, each noted.
 */
async function applyAdvisedRemedies(context: SuiteContext, faultScene: FaultScene, first: CliOutcome, again: () => Promise<CliOutcome>): Promise<CliOutcome> {
  let outcome = first;
  if (!advisesLibvirtdRestart(outcome)) return outcome;
  await restartLibvirtd(faultScene);
  context.report.notes.push(`${String(outcome.error?.['message'])}: libvirtd restarted as the command advised`);
  outcome = await again();
  if (!advisesLibvirtdRestart(outcome)) return outcome;
  // libvirtd's reconnect to the domain may itself hang in a monitor call then (its job
  // "init" holds the domain), which only a restart of libvirtd after the stop ends.
  await faultScene.domain.destroy();
  await restartLibvirtd(faultScene);
  await faultScene.domain.start();
  context.report.notes.push(
    'the job was still there after the libvirtd restart: the domain was stopped, libvirtd restarted and the domain started, as the command advised',
  );
  return again();
}

async function plainBackup(
  context: SuiteContext,
  faultScene: FaultScene,
  scene: SoakScene,
  state: RunState,
  snapshot: string,
  level: string,
  transport: BackupTransport,
  rng: Rng,
  log: CheckLog,
  alsoRestore: readonly string[] = [],
): Promise<string> {
  const umask = rng.pick(UMASKS);
  const before = await readManifest(scene.setDir);
  const backUp = async () => {
    context.report.backups += 1;
    return runCli(context.cli, faultScene.backupArgs(scene.setDir, level, transport), { umask, timeoutMs: BACKUP_TIMEOUT_MS });
  };
  const outcome = await applyAdvisedRemedies(context, faultScene, await backUp(), backUp);
  const change = manifestChange(before, await readManifest(scene.setDir));
  const works = outcome.code === 0 && outcome.result !== undefined && change.kind === 'one-more';
  log.record(
    'next-backup-works',
    works
      ? null
      : {
          expected: `a ${level}/${transport} backup exits 0 and adds one backup`,
          actual: `${ended(outcome)}, manifest ${change.kind === 'wrong' ? change.why : change.kind}`,
          output: describeOutcome(outcome),
        },
  );
  const restoreIds = [...alsoRestore];
  let summary = `${level}/${transport} ${ended(outcome)}`;
  if (works && change.kind === 'one-more') {
    const added = change.added;
    state.points.add(added.id, snapshot);
    for (const disk of added.disks) state.origins.set(disk.file, `backup ${added.id}, ${transport}, umask ${octal(umask)}`);
    state.timings.learn(outcome.durationMs, outcome.firstSeen.get('start'));
    restoreIds.push(added.id);
    summary = `${added.id} ${added.level}/${transport} (${formatBytes(added.disks.reduce((sum, disk) => sum + disk.dataBytes, 0))})`;
    const fallback = outcome.events.find((event) => event.type === 'notice' && String(event['message']).startsWith('taking a full backup'));
    if (level === 'auto' && added.level === 'full' && fallback) {
      summary += `: ${String(fallback['message'])}`;
      context.report.notes.push(`backup ${added.id}: ${String(fallback['message'])}`);
    }
  }
  await checkVerify(scene, log, 'clean');
  await checkNothingLeft(scene, log, { libvirt: true, files: true });
  await checkFileModes(scene, log, state.origins);
  for (const id of restoreIds) {
    const [point] = state.points.withReference([id]);
    if (point)
      await restoreMatchesReference(
        scene,
        faultScene.domain,
        point,
        rng.pick(['raw', 'qcow2'] as const),
        join(context.workDir, 'restore'),
        log,
        context.report,
      );
  }
  return summary;
}

/**
 * A job that outlived both runs has been reported; it is ended here so the next run
 * starts from a quiet domain and reports its own problems, not this one's echoes.
 */
async function settleDomainJob(scene: SoakScene, context: SuiteContext): Promise<void> {
  if ((await domainJob(scene.uri, scene.domainName)) === 'None') return;
  await tryRun('virsh', ['-c', scene.uri, 'domjobabort', scene.domainName]);
  const deadline = Date.now() + 60_000;
  while ((await domainJob(scene.uri, scene.domainName)) !== 'None') {
    if (Date.now() > deadline) throw new Error(`the job left on ${scene.domainName} does not end, even aborted; the suite cannot go on`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  context.report.notes.push(`a job left on ${scene.domainName} after both runs was aborted`);
}

async function pruneIfFull(context: SuiteContext, faultScene: FaultScene, scene: SoakScene, state: RunState, rng: Rng, runNumber: number): Promise<void> {
  const { freeBytes, totalBytes } = await faultScene.destination.usage();
  if (1 - freeBytes / totalBytes < PRUNE_ABOVE_USED) return;
  const log = new CheckLog();
  const keep = rng.int(1, 3);
  const outcome = await runCli(context.cli, ['prune', scene.setDir, '--keep', String(keep), '--json'], {
    umask: rng.pick(UMASKS),
    timeoutMs: BACKUP_TIMEOUT_MS,
  });
  context.report.prunes += 1;
  log.record('prune-works', outcome.code === 0 ? null : { expected: `prune --keep ${keep} exits 0`, actual: ended(outcome), output: describeOutcome(outcome) });
  for (const backup of (await readManifest(scene.setDir)).manifest?.backups ?? []) {
    for (const disk of backup.disks) state.origins.set(disk.file, `prune after run ${runNumber}`);
  }
  await checkVerify(scene, log, 'clean');
  await checkNothingLeft(scene, log, { libvirt: true, files: true });
  const ids = ((await readManifest(scene.setDir)).manifest?.backups ?? []).map((backup) => backup.id);
  for (const point of state.points.withReference(ids))
    await restoreMatchesReference(scene, faultScene.domain, point, 'raw', join(context.workDir, 'restore'), log, context.report);
  reportFailures(context, log, `after run ${runNumber}, prune --keep ${keep}`);
}
