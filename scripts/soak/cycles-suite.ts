// The soak: backup / restore / compare cycles with random guest writes between them,
// levels and transports chosen at random, a prune every `pruneEvery` cycles. Every
// restore is compared byte for byte with the reference kept in step with the disks.
import { BackupPoints } from './backup-points.js';
import { describeOutcome, runCli } from './cli-process.js';
import { planWrites } from './guest-writes.js';
import { checkFileModes, checkNothingLeft, checkVerify, CheckLog, FileOrigins, ReportedLeftovers, type SoakScene } from './invariants.js';
import { LibvirtLink } from './libvirt-link.js';
import { MirroredDomain } from './mirrored-domain.js';
import { PhaseTimer } from './phase-timer.js';
import { formatBytes } from '../../src/common/format-bytes.js';
import { restoreMatchesReference } from './restore-check.js';
import { Rng } from './seeded-random.js';
import { manifestChange, readManifest } from './set-state.js';
import { makeDirs, reportFailures, tooManyFailures, type SuiteContext } from './suite-context.js';
import { createWriteSources } from './write-sources.js';

export interface CyclesSettings {
  cycles: number;
  pruneEvery: number;
  /** Check that the running disks still equal their references every this many cycles. */
  modelCheckEvery: number;
}

/** Enough references for any `--keep` a prune draws. */
const REFERENCE_WINDOW = 6;
const UMASKS = [0o022, 0o077, 0o002, 0o027] as const;
/** Backups of these small disks take seconds, even emulated and under load; one that runs for minutes hangs. */
const BACKUP_TIMEOUT_MS = 180_000;

/** What every cycle works on: the domain and its references, the set, the checks' memory. */
interface Soak {
  context: SuiteContext;
  settings: CyclesSettings;
  domain: MirroredDomain;
  scene: SoakScene;
  points: BackupPoints;
  origins: FileOrigins;
  log: CheckLog;
  restoreDir: string;
  /** How many files the guest writes take their data from. */
  sourceCount: number;
}

export async function runCyclesSuite(context: SuiteContext, settings: CyclesSettings): Promise<void> {
  const setup = Rng.derive(context.seed, 'setup');
  const sizesMiB = [setup.int(64, 256), setup.int(64, 256)];
  context.say(`disks: ${sizesMiB.map((size) => `${size} MiB`).join(', ')}; ${settings.cycles} cycles, a prune every ${settings.pruneEvery}`);
  const dirs = await makeDirs(context.workDir, ['refs', 'set', 'restore', 'sources']);
  const sources = await createWriteSources(dirs['sources']!, context.seed, 3);
  const link = new LibvirtLink();
  const domain = await MirroredDomain.create(link, {
    label: 'soak-cycles',
    sizesMiB,
    virtualization: context.virtualization,
    referenceDir: dirs['refs']!,
    sources,
  });
  const scene: SoakScene = {
    uri: link.uri,
    domainName: domain.name,
    setDir: dirs['set']!,
    otherSetDirs: () => [],
    cli: context.cli,
    imageDir: { path: context.daemon.imageDir, allowed: domain.disks.map((disk) => disk.image.split('/').at(-1)!) },
    reported: new ReportedLeftovers(),
  };
  const soak: Soak = {
    context,
    settings,
    domain,
    scene,
    points: new BackupPoints(domain, REFERENCE_WINDOW),
    origins: new FileOrigins(),
    log: new CheckLog(),
    restoreDir: dirs['restore']!,
    sourceCount: sources.length,
  };
  try {
    for (let cycle = 1; cycle <= settings.cycles && !tooManyFailures(context); cycle += 1) await runCycle(soak, cycle);
    await checkEveryPoint(soak);
  } finally {
    await domain.cleanup();
    await link.drop();
  }
}

/** Guest writes, a backup at a random level and transport, its restore, the checks, and now and then a prune. */
async function runCycle(soak: Soak, cycle: number): Promise<void> {
  const { context, settings, domain, scene, points, log } = soak;
  const started = Date.now();
  const timer = new PhaseTimer();
  const rng = Rng.derive(context.seed, 'cycle', cycle);
  const where = `cycle ${cycle}`;

  const writes = planWrites(rng, domain.disks, soak.sourceCount);
  await domain.apply(writes);
  const written = writes.reduce((sum, write) => sum + write.length, 0);
  context.report.guestWrites += writes.length;
  context.report.guestBytesWritten += written;
  const snapshot = `c${cycle}`;
  await domain.snapshot(snapshot);
  timer.mark('writes');

  const { summary, hung } = await backUpAndRestore(soak, rng, cycle, snapshot, timer);
  // A command the soak had to kill for hanging could not clean up: what it left is
  // for the next cycle's backup to clean up, and for that cycle's checks to judge.
  if (!hung) await checkNothingLeft(scene, log, { libvirt: true, files: true, processGraceMs: 1000 });
  await checkFileModes(scene, log, soak.origins);
  if (cycle % settings.modelCheckEvery === 0 || cycle === settings.cycles || log.failures.some((failure) => failure.check === 'restore-equals-reference')) {
    const wrong = await domain.modelMismatches();
    log.record(
      'model-in-step',
      wrong.length === 0 ? null : { expected: 'the running disks equal their references (else the soak, not the product, is wrong)', actual: wrong.join('; ') },
    );
  }
  timer.mark('checks');
  const failed = reportFailures(context, log, where, undefined);
  context.report.cycles += 1;

  if (cycle % settings.pruneEvery === 0 && cycle < settings.cycles)
    await pruneAndCheck(context, scene, domain, points, soak.origins, rng, soak.restoreDir, where);
  await points.trim(await backupIds(scene));
  timer.mark('prune');
  context.say(
    `cycle ${cycle}/${settings.cycles}: ${writes.length} writes (${formatBytes(written)}), ${summary}${failed > 0 ? `, ${failed} FAILED` : ''} [${((Date.now() - started) / 1000).toFixed(1)} s: ${timer}]`,
  );
}

/** One backup through the CLI, judged by its exit and by the manifest, then its point restored and compared. */
async function backUpAndRestore(soak: Soak, rng: Rng, cycle: number, snapshot: string, timer: PhaseTimer): Promise<{ summary: string; hung: boolean }> {
  const { context, domain, scene, log } = soak;
  const level =
    cycle === 1
      ? 'full'
      : rng.weighted([
          ['full', 10],
          ['inc', 40],
          ['diff', 25],
          ['auto', 25],
        ] as const);
  const transport = rng.weighted([
    ['pull', 70],
    ['push', 30],
  ] as const);
  const umask = rng.pick(UMASKS);
  const before = await readManifest(scene.setDir);
  const outcome = await runCli(context.cli, ['backup', domain.name, '--dest', scene.setDir, '--level', level, '--transport', transport, '--json'], {
    umask,
    timeoutMs: BACKUP_TIMEOUT_MS,
  });
  context.report.backups += 1;
  timer.mark('backup');
  const change = manifestChange(before, await readManifest(scene.setDir));
  let summary = `${level}/${transport}`;
  log.record(
    'backup-succeeds',
    outcome.code === 0 && outcome.result !== undefined
      ? null
      : {
          expected: `${level} ${transport} backup exits 0 with a result`,
          actual: `exit ${outcome.code ?? outcome.signal}${outcome.hung ? ' (hung)' : ''}`,
          output: describeOutcome(outcome),
        },
  );
  if (change.kind !== 'one-more') {
    log.record('manifest-one-more-backup', {
      expected: 'manifest.json gains exactly one backup',
      actual: change.kind === 'wrong' ? change.why : 'unchanged',
      output: describeOutcome(outcome),
    });
    return { summary, hung: outcome.hung };
  }
  log.record('manifest-one-more-backup', null);
  const added = change.added;
  const expectedLevel = level === 'auto' ? undefined : level;
  log.record(
    'level-as-requested',
    expectedLevel === undefined || added.level === expectedLevel
      ? null
      : { expected: `a ${expectedLevel} backup`, actual: `${added.level}`, output: describeOutcome(outcome) },
  );
  summary += ` -> ${added.id} ${added.level} (${formatBytes(added.disks.reduce((sum, disk) => sum + disk.dataBytes, 0))})`;
  for (const disk of added.disks) soak.origins.set(disk.file, `backup ${added.id}, ${transport}, umask ${umask.toString(8).padStart(3, '0')}`);
  soak.points.add(added.id, snapshot);
  const format = rng.pick(['raw', 'qcow2'] as const);
  await restoreMatchesReference(scene, domain, { backupId: added.id, snapshot }, format, soak.restoreDir, log, context.report);
  timer.mark('restore');
  return { summary: `${summary}, restored as ${format}`, hung: outcome.hung };
}

/** The end: the whole set verifies and every point that has a reference restores equal to it. */
async function checkEveryPoint({ context, domain, scene, points, log, restoreDir }: Soak): Promise<void> {
  await checkVerify(scene, log, 'clean');
  for (const point of points.withReference(await backupIds(scene))) {
    await restoreMatchesReference(scene, domain, point, 'raw', restoreDir, log, context.report);
  }
  reportFailures(context, log, 'end of the soak', undefined);
}

async function backupIds(scene: SoakScene): Promise<string[]> {
  return ((await readManifest(scene.setDir)).manifest?.backups ?? []).map((backup) => backup.id);
}

async function pruneAndCheck(
  context: SuiteContext,
  scene: SoakScene,
  domain: MirroredDomain,
  points: BackupPoints,
  origins: FileOrigins,
  rng: Rng,
  restoreDir: string,
  where: string,
): Promise<void> {
  const log = new CheckLog();
  const keep = rng.int(1, REFERENCE_WINDOW);
  const umask = rng.pick(UMASKS);
  const before = await readManifest(scene.setDir);
  const outcome = await runCli(context.cli, ['prune', scene.setDir, '--keep', String(keep), '--json'], { umask, timeoutMs: BACKUP_TIMEOUT_MS });
  context.report.prunes += 1;
  if (outcome.code !== 0) {
    log.record('prune-works', { expected: `prune --keep ${keep} exits 0`, actual: `exit ${outcome.code ?? outcome.signal}`, output: describeOutcome(outcome) });
  } else {
    const newest = (before.manifest?.backups ?? []).slice(-keep).map((backup) => backup.id);
    const now = ((await readManifest(scene.setDir)).manifest?.backups ?? []).map((backup) => backup.id);
    log.record(
      'prune-works',
      newest.every((id) => now.includes(id)) && now.slice(-keep).join() === newest.join()
        ? null
        : { expected: `the newest ${keep} backups (${newest.join(', ')}) kept`, actual: `the set holds ${now.join(', ')}`, output: describeOutcome(outcome) },
    );
    for (const file of (await readManifest(scene.setDir)).manifest?.backups.flatMap((backup) => backup.disks.map((disk) => disk.file)) ?? []) {
      origins.set(file, `prune, umask ${umask.toString(8).padStart(3, '0')}`);
    }
  }
  await checkVerify(scene, log, 'clean');
  const ids = ((await readManifest(scene.setDir)).manifest?.backups ?? []).map((backup) => backup.id);
  for (const point of points.withReference(ids))
    await restoreMatchesReference(scene, domain, point, rng.pick(['raw', 'qcow2'] as const), restoreDir, log, context.report);
  await checkNothingLeft(scene, log, { libvirt: true, files: true });
  await checkFileModes(scene, log, origins);
  const failed = reportFailures(context, log, `${where}, prune --keep ${keep}`);
  context.say(`  prune --keep ${keep}: ${ids.length} backups left${failed > 0 ? `, ${failed} FAILED` : ''}`);
}
