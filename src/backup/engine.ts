// The backup engine: one run of `libvirt-backup backup`. It decides the level,
// makes libvirt create the next checkpoint atomically with the backup, moves
// the data (pull: our NBD client reads libvirt's export and our one-pass writer
// makes the qcow2 files; push: libvirt writes them and we rebase), and commits the
// result to the set. Any failure or abort ends the libvirt job, removes this
// run's files and its checkpoint, and leaves manifest.json as it was.
import { mkdtemp, readFile, rm, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';

import type { Checkpoint } from '../checkpoint.js';
import { connect, type Connection } from '../connection.js';
import { BlockJobStatus, BlockJobType, CheckpointCreateFlags, CheckpointXMLFlags, DomainState, JobType } from '../constants.js';
import type { Domain } from '../domain.js';
import { LibvirtError } from '../errors.js';
import { JobFailedError } from '../jobs.js';
import type { BlockJobPayload } from '../events.js';
import { AllocationFlags, BASE_ALLOCATION, DirtyBitmapFlags, NbdClient } from '../nbd/index.js';
import { parseDomainXml, type BackupSpec, type CheckpointSpec, type DomainSummary } from '../xml/index.js';
import { BackupSet } from './backup-set.js';
import { assertChainIntact } from './chain-check.js';
import { checksumFile } from './checksum.js';
import { selectDisks, type SelectedDisk } from './disk-selection.js';
import { DomainLock, type DomainRunRecord } from './domain-lock.js';
import { BackupError, type BackupEvent, type BackupOptions, type BackupResult, type RequestedLevel } from './engine-types.js';
import { errnoCode } from './errors.js';
import { parseManifest, type BackupLevel, type BackupRecord, type DiskRecord } from './manifest.js';
import { addPendingCheckpoint } from './pending-checkpoints.js';
import { deleteCheckpointIfPresent, deletePendingCheckpoints, findCheckpoint } from './leftover-checkpoints.js';
import { qemuImgInfo, qemuImgOwnDataBytes, qemuImgRebaseUnsafe } from './qemu-img.js';
import { CLUSTER_SIZE, clusterRuns, planQcow2, type ClusterRun } from './qcow2-layout.js';
import { writeQcow2 } from './qcow2-writer.js';
import { ensureRunDir, isSocketDirOfRunDir, socketDirPrefix, sweepDeadSocketDirs } from './run-dir.js';
import { readJournal } from './run-journal.js';
import { SpaceGuard, type SpaceNeed } from './space-guard.js';
import { assertChainChecksums, recordVerifiedFiles } from './verified-files.js';

export * from './engine-types.js';

/** Checkpoints this tool creates start with this; others on the domain are left alone. */
export const CHECKPOINT_PREFIX = 'lvb-';
/** Socket directories of versions that kept them in the temp directory. */
const LEGACY_SOCKET_DIR_PREFIX = 'lvb-backup-';
/** How long a leftover job may take to end once aborted. */
const LEFTOVER_JOB_END_MS = 120_000;
const PROGRESS_INTERVAL_MS = 200;

/** libvirt refused the parent checkpoint when the job started; nothing was created. */
class ChainBrokenError extends Error {}

interface LevelPlan {
  level: BackupLevel;
  parent: BackupRecord | null;
  reason: string;
}

interface DiskPlan extends SelectedDisk {
  level: BackupLevel;
  file: string;
  backingFile: string | null;
  virtualSize: number;
  dataBytes: number;
  /** Set when this run wrote the file itself and hashed it on the way. */
  written?: { fileSize: number; checksum: string };
}

export async function runBackup(options: BackupOptions): Promise<BackupResult> {
  const started = Date.now();
  const notices: string[] = [];
  const emit = (event: BackupEvent) => {
    if (event.type === 'notice') notices.push(event.message);
    options.onEvent?.(event);
  };
  const signal = options.signal;
  signal?.throwIfAborted();
  const requested: RequestedLevel = options.level ?? 'auto';
  if (!['auto', 'full', 'inc', 'diff'].includes(requested)) {
    throw new BackupError('INVALID_ARGUMENT', `level must be auto, full, inc or diff, got '${String(requested)}'`);
  }
  const transport = options.transport ?? 'pull';
  if (transport !== 'pull' && transport !== 'push') {
    throw new BackupError('INVALID_ARGUMENT', `transport must be pull or push, got '${String(transport)}'`);
  }
  const scratchDir = options.scratchDir === undefined ? null : await checkScratchDir(options.scratchDir, transport);

  const ownConnection = options.connection === undefined;
  const conn = options.connection ?? (await connect(options.uri ?? 'qemu:///system'));
  try {
    const domain = await lookupDomain(conn, options.domain);
    try {
      await conn.assertBackupSupport();
    } catch (error) {
      if (error instanceof LibvirtError) throw error;
      throw new BackupError('UNSUPPORTED', error instanceof Error ? error.message : String(error), { cause: error });
    }
    const { state } = await domain.getState();
    if (state !== DomainState.RUNNING && state !== DomainState.PAUSED) {
      throw new BackupError('DOMAIN_NOT_RUNNING', `domain ${domain.name} is not running (${DomainState[state] ?? state}); libvirt backs up running domains only`);
    }
    if (requested === 'inc' || requested === 'diff') await assertSetExists(options.dest, requested);
    const summary = parseDomainXml(await domain.getXMLDesc());
    const selection = selectDisks(summary, options.disks);
    for (const skipped of selection.skipped) emit({ type: 'notice', message: `skipping ${skipped.target}: ${skipped.reason}` });

    const runDir = await ensureRunDir();
    await sweepDeadSocketDirs(runDir);
    // One run per domain, whatever the set: from here on, any backup job on the domain
    // that libvirt-backup started belongs to a run that is gone.
    const domainLock = await DomainLock.acquire(runDir, { domain: { name: domain.name, uuid: domain.uuid }, set: resolve(options.dest), transport });
    try {
      // The job first, then files: a push job may still be writing the files recovery deletes.
      await endLeftoverJob(conn, domain, runDir, emit);
      await cleanUpAfterInterruptedRun(domain, domainLock.interrupted, emit);
      const set = await BackupSet.openOrCreate(options.dest, { name: domain.name, uuid: domain.uuid, xml: summary.xml });
      try {
        if (set.recovery && (set.recovery.removedFiles?.length ?? 0) > 0) {
          emit({ type: 'notice', message: `cleaned up after an interrupted run: removed ${set.recovery.removedFiles.join(', ')}` });
        }
        await deletePendingCheckpoints(set, domain, (message) => emit({ type: 'notice', message }));
        const plan = await planLevel(set, requested, domain, selection.disks, emit, signal);
        const context: ExecuteContext = {
          conn, domain, summary, set, plan, selection: selection.disks, transport, signal, emit, started, notices,
          concurrency: options.concurrency ?? 2, runDir, domainLock, scratchDir, hooks: options.hooks ?? {},
        };
        try {
          return await execute(context);
        } catch (error) {
          // Some broken bitmaps only show when QEMU is asked to use them.
          if (!(error instanceof ChainBrokenError)) throw error;
          if (requested !== 'auto') throw new BackupError('CHAIN_UNUSABLE', `cannot take ${plan.level === 'inc' ? 'an incremental' : 'a differential'} backup: ${error.message}`, { cause: error.cause });
          emit({ type: 'notice', message: `taking a full backup: ${error.message}` });
          return await execute({ ...context, plan: { level: 'full', parent: null, reason: error.message } });
        }
      } finally {
        await set.close();
      }
    } finally {
      await domainLock.release();
    }
  } finally {
    if (ownConnection) await conn.close();
  }
}

/** An incremental or differential needs a set to start from; refused before anything is created. */
async function assertSetExists(dest: string, level: 'inc' | 'diff'): Promise<void> {
  const manifest = join(resolve(dest), 'manifest.json');
  if (await stat(manifest).then(() => true, () => false)) return;
  throw new BackupError('CHAIN_UNUSABLE', `cannot take ${level === 'inc' ? 'an incremental' : 'a differential'} backup: ${resolve(dest)} holds no backup set yet; take a full (or auto) backup first`);
}

async function checkScratchDir(dir: string, transport: 'pull' | 'push'): Promise<string> {
  if (typeof dir !== 'string' || dir === '') throw new BackupError('INVALID_ARGUMENT', 'scratchDir must be a directory path');
  if (transport === 'push') throw new BackupError('INVALID_ARGUMENT', 'scratchDir: push backups use no scratch file (libvirt writes the backup files directly)');
  const absolute = resolve(dir);
  const info = await stat(absolute).catch(() => undefined);
  if (!info?.isDirectory()) throw new BackupError('INVALID_ARGUMENT', `scratchDir: ${absolute} is not an existing directory`);
  return absolute;
}

async function lookupDomain(conn: Connection, nameOrUuid: string): Promise<Domain> {
  if (typeof nameOrUuid !== 'string' || nameOrUuid === '') throw new BackupError('INVALID_ARGUMENT', 'a domain name or UUID is required');
  const isUuid = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i.test(nameOrUuid);
  try {
    return isUuid ? await conn.lookupDomainByUUID(nameOrUuid) : await conn.lookupDomainByName(nameOrUuid);
  } catch (error) {
    if (error instanceof LibvirtError && error.codeName === 'VIR_ERR_NO_DOMAIN') {
      throw new BackupError('DOMAIN_NOT_FOUND', `no domain named '${nameOrUuid}' on ${await conn.getURI()}`, { cause: error });
    }
    throw error;
  }
}

/**
 * A backup job libvirt-backup started that is still running belongs to a run that died
 * (the caller holds the domain lock): it is ended, and waited for, so that its files can
 * be removed safely. Any other job on the domain is someone else's and is left alone.
 */
async function endLeftoverJob(conn: Connection, domain: Domain, runDir: string, emit: (event: BackupEvent) => void): Promise<void> {
  const job = await domain.getJobInfo();
  if (job.type === JobType.NONE) return;
  let spec: BackupSpec | undefined;
  try {
    spec = await domain.backupGetSpec();
  } catch {
    spec = undefined;
  }
  const described = spec === undefined ? undefined : await describeOurJob(spec, runDir);
  if (described === undefined) {
    throw new BackupError('DOMAIN_BUSY', `domain ${domain.name} already has a job running (${JobType[job.type] ?? job.type}) that libvirt-backup did not start; wait for it or abort it`);
  }
  const ended = new Promise<void>((resolveEnded) => {
    const done = () => resolveEnded();
    domain.waitForJob({ timeoutMs: LEFTOVER_JOB_END_MS }).then(done, done);
  });
  await conn.eventsReady();
  await domain.abortJob().catch(() => undefined);
  await ended;
  if ((await domain.getJobInfo()).type !== JobType.NONE) {
    throw new BackupError('DOMAIN_BUSY', `domain ${domain.name} still runs the ${described} left by an interrupted run after it was aborted; try again later`);
  }
  emit({ type: 'notice', message: `ended the ${described} left behind by an interrupted run` });
}

/** What a running backup job of ours is, or undefined when it is not ours. */
async function describeOurJob(spec: BackupSpec, runDir: string): Promise<string | undefined> {
  if (spec.mode === 'pull') {
    const socket = spec.server?.transport === 'unix' ? spec.server.socket : undefined;
    if (socket === undefined) return undefined;
    const ours = isSocketDirOfRunDir(dirname(socket), runDir) || basename(dirname(socket)).startsWith(LEGACY_SOCKET_DIR_PREFIX);
    return ours ? `pull backup job (${socket})` : undefined;
  }
  // A push job writes files a set's journal lists: that is what makes it ours.
  const targets = (spec.disks ?? []).filter((disk) => disk.backup !== 'no').map((disk) => (disk.type === 'file' ? disk.target?.file : undefined));
  if (targets.length === 0 || targets.some((target) => target === undefined)) return undefined;
  for (const target of targets as string[]) {
    const journal = await readJournal(dirname(target)).catch(() => null);
    if (journal?.kind !== 'backup' || !journal.creates.includes(basename(target))) return undefined;
  }
  return `push backup job (into ${dirname(targets[0]!)})`;
}

/**
 * What a run that died holding the domain lock left outside its set: its socket
 * directory, scratch files kept elsewhere, and its checkpoint when its set is another
 * one (this set's own journal hands the checkpoint on when the set is opened).
 */
async function cleanUpAfterInterruptedRun(domain: Domain, interrupted: DomainRunRecord | null, emit: (event: BackupEvent) => void): Promise<void> {
  if (interrupted === null) return;
  if (interrupted.socketDir !== undefined) await rm(interrupted.socketDir, { recursive: true, force: true });
  for (const file of interrupted.scratchFiles ?? []) {
    await unlink(file).then(
      () => emit({ type: 'notice', message: `removed the scratch file ${file} of an interrupted run` }),
      (error: unknown) => {
        if (errnoCode(error) !== 'ENOENT') emit({ type: 'notice', message: `could not remove the scratch file ${file} of an interrupted run: ${String(error)}` });
      },
    );
  }
  const checkpoint = interrupted.checkpoint;
  if (checkpoint === undefined) return;
  // Only a checkpoint no manifest took in is a leftover.
  const manifestPath = join(interrupted.set, 'manifest.json');
  const manifestText = await readFile(manifestPath, 'utf8').catch(() => null);
  if (manifestText !== null) {
    let referenced: boolean;
    try {
      referenced = parseManifest(manifestText, manifestPath).backups.some((backup) => backup.checkpoint === checkpoint);
    } catch {
      // A manifest we cannot read might name it: leave the checkpoint alone.
      referenced = true;
    }
    if (referenced) return;
  }
  if ((await deleteCheckpointIfPresent(domain, checkpoint)) === 'deleted') {
    emit({ type: 'notice', message: `deleted checkpoint ${checkpoint} left in libvirt by an interrupted run` });
  }
}

async function planLevel(
  set: BackupSet,
  requested: RequestedLevel,
  domain: Domain,
  disks: readonly SelectedDisk[],
  emit: (event: BackupEvent) => void,
  signal: AbortSignal | undefined,
): Promise<LevelPlan> {
  if (requested === 'full') return { level: 'full', parent: null, reason: 'full backup requested' };
  const auto = requested === 'auto';
  const wanted: BackupLevel = auto ? 'inc' : requested;
  const refuse = (why: string): LevelPlan => {
    if (auto) {
      emit({ type: 'notice', message: `taking a full backup: ${why}` });
      return { level: 'full', parent: null, reason: why };
    }
    throw new BackupError('CHAIN_UNUSABLE', `cannot take ${wanted === 'inc' ? 'an incremental' : 'a differential'} backup: ${why}`);
  };
  const parent = wanted === 'inc' ? set.latest() : set.lastFull();
  if (parent === null) return refuse(set.latest() === null ? 'the set has no backup yet' : 'the set has no full backup');
  if (!disks.some((disk) => disk.tracksChanges)) return refuse('no disk can track changes (none is qcow2)');
  // A damaged chain is reported, never built upon (nor silently replaced by a full).
  for (const disk of disks) {
    if (!parent.disks.some((d) => d.target === disk.target)) continue;
    const chain = set.chainFor(disk.target, parent.id);
    await assertChainIntact(set, chain);
    await assertChainChecksums(set.dir, chain, set.referencedFiles(), signal ? { signal } : {});
  }
  const usable = await checkpointUsable(set, parent, domain, emit);
  if (usable !== true) return refuse(usable);
  return {
    level: wanted,
    parent,
    reason: auto ? `changes since backup ${parent.id}` : `${wanted} backup requested, relative to backup ${parent.id}`,
  };
}

/**
 * True when `parent`'s checkpoint exists in libvirt with an intact bitmap, after
 * redefining it (and any older ones of the set) from the saved XML if libvirt lost
 * them; otherwise why not.
 */
async function checkpointUsable(
  set: BackupSet,
  parent: BackupRecord,
  domain: Domain,
  emit: (event: BackupEvent) => void,
): Promise<true | string> {
  const name = parent.checkpoint;
  if (name === null) return `backup ${parent.id} has no checkpoint to start from`;
  let checkpoint: Checkpoint | undefined = await findCheckpoint(domain, name);
  if (checkpoint === undefined) {
    if (parent.checkpointXml === null) return `checkpoint ${name} is missing from libvirt and the set holds no copy of it`;
    // Older checkpoints first, so each redefinition finds its parent.
    const missing = [];
    for (const record of set.backups) {
      if (record.checkpoint === null || record.checkpointXml === null) continue;
      if (record.id === parent.id || (await findCheckpoint(domain, record.checkpoint)) === undefined) missing.push(record);
      if (record.id === parent.id) break;
    }
    for (const record of missing) {
      try {
        const redefined = await domain.createCheckpoint(record.checkpointXml!, CheckpointCreateFlags.REDEFINE | CheckpointCreateFlags.REDEFINE_VALIDATE);
        if (record.id === parent.id) checkpoint = redefined;
        emit({ type: 'notice', message: `checkpoint ${record.checkpoint} was missing from libvirt; redefined it from the set's saved copy` });
      } catch (error) {
        if (!(error instanceof LibvirtError)) throw error;
        if (record.id === parent.id) return `checkpoint ${name} is missing from libvirt and could not be redefined: ${error.message}`;
      }
    }
    if (checkpoint === undefined) return `checkpoint ${name} could not be restored`;
  }
  try {
    // Asking for bitmap sizes makes libvirt look at the bitmaps themselves.
    await checkpoint.getXMLDesc(CheckpointXMLFlags.SIZE | CheckpointXMLFlags.NO_DOMAIN);
  } catch (error) {
    if (error instanceof LibvirtError) return `the bitmap of checkpoint ${name} is missing or broken (${error.message})`;
    throw error;
  }
  return true;
}

interface ExecuteContext {
  conn: Connection;
  domain: Domain;
  summary: DomainSummary;
  set: BackupSet;
  plan: LevelPlan;
  selection: SelectedDisk[];
  transport: 'pull' | 'push';
  signal: AbortSignal | undefined;
  emit: (event: BackupEvent) => void;
  started: number;
  notices: string[];
  concurrency: number;
  runDir: string;
  domainLock: DomainLock;
  /** Where pull scratch files go; null: the set directory. */
  scratchDir: string | null;
  hooks: NonNullable<BackupOptions['hooks']>;
}

/** A disk's pull export, opened, with what will be copied from it. */
interface OpenedExport {
  disk: DiskPlan;
  source: NbdClient;
  runs: ClusterRun[];
  /** Bytes of the backup file to be written (metadata included). */
  fileSize: number;
  /** Bytes of the file written so far. */
  written: number;
  /** Data the disk held when the job started: the most copy-before-write can put in its scratch. */
  scratchBound: number;
}

async function execute(context: ExecuteContext): Promise<BackupResult> {
  const { conn, domain, set, plan, selection, transport, signal, emit } = context;
  const backupId = set.nextId();
  const checkpointName = `${CHECKPOINT_PREFIX}${backupId}-${Date.now().toString(36)}`;
  const startedAt = new Date().toISOString();
  const disks: DiskPlan[] = selection.map((disk) => {
    const parentDisk = plan.parent?.disks.find((d) => d.target === disk.target);
    // A disk copies whole when it cannot track changes or the parent has no copy of it.
    const level: BackupLevel = plan.level !== 'full' && disk.tracksChanges && parentDisk !== undefined ? plan.level : 'full';
    if (plan.level !== 'full' && level === 'full') {
      emit({ type: 'notice', message: `${disk.target}: full copy (${disk.fullCopyReason ?? 'not in the parent backup'})` });
    }
    return { ...disk, level, file: BackupSet.fileName(disk.target, backupId, level), backingFile: level === 'full' ? null : parentDisk!.file, virtualSize: 0, dataBytes: 0 };
  });
  const scratchName = (target: string) => `.scratch-${backupId}-${target}.qcow2`;
  const scratchPaths = new Map(
    disks.map((disk) => [
      disk.target,
      context.scratchDir === null ? set.pathOf(scratchName(disk.target)) : join(context.scratchDir, `.lvb-scratch-${domain.uuid}-${backupId}-${disk.target}.qcow2`),
    ]),
  );
  const scratchInSet = transport === 'pull' && context.scratchDir === null;
  const scratchOutside = transport === 'pull' && context.scratchDir !== null ? [...scratchPaths.values()] : [];
  const socketDir = transport === 'pull' ? await mkdtemp(socketDirPrefix(context.runDir)) : undefined;
  // Recorded before any of it exists, so whatever kills this run, the next one finds it all.
  await context.domainLock.update({
    checkpoint: checkpointName,
    ...(socketDir !== undefined ? { socketDir } : {}),
    ...(scratchOutside.length > 0 ? { scratchFiles: scratchOutside } : {}),
  });
  let run;
  try {
    run = await set.beginRun([...disks.map((disk) => disk.file), ...(scratchInSet ? disks.map((disk) => scratchName(disk.target)) : [])], { checkpoint: checkpointName });
  } catch (error) {
    if (socketDir !== undefined) await rm(socketDir, { recursive: true, force: true });
    throw error;
  }
  const blockJobs: BlockJobPayload[] = [];
  const onBlockJob = (d: Domain, payload: BlockJobPayload) => {
    if (d.uuid === domain.uuid && payload.type === BlockJobType.BACKUP) blockJobs.push(payload);
  };
  conn.on('block-job', onBlockJob);
  // Ends the data transfer when the run must stop for a reason of its own (space).
  const stopRun = new AbortController();
  const runSignal = signal ? AbortSignal.any([signal, stopRun.signal]) : stopRun.signal;
  let guard: SpaceGuard | undefined;
  let jobRunning = false;
  let committed = false;
  try {
    await conn.eventsReady();
    const spec = backupSpecFor(context, disks, socketDir === undefined ? undefined : join(socketDir, 'export.sock'), scratchPaths);
    const checkpointSpec = checkpointSpecFor(context, disks, checkpointName, backupId);
    signal?.throwIfAborted();
    emit({
      type: 'start',
      backupId,
      level: plan.level,
      transport,
      reason: plan.reason,
      disks: disks.map((d) => ({ target: d.target, level: d.level, virtualSize: d.virtualSize })),
    });
    try {
      await domain.backupBegin(spec, checkpointSpec);
    } catch (error) {
      const incremental = spec.incremental;
      if (error instanceof LibvirtError && error.codeName === 'VIR_ERR_CHECKPOINT_INCONSISTENT' && incremental !== undefined) {
        throw new ChainBrokenError(`the bitmap of checkpoint ${incremental} is missing or broken (${error.message})`, { cause: error });
      }
      throw error;
    }
    jobRunning = true;
    const startGuard = async (need: () => Promise<SpaceNeed>) => {
      guard = new SpaceGuard({
        scratchDir: transport === 'pull' ? (context.scratchDir ?? set.dir) : null,
        outputDir: set.dir,
        need,
        onExhausted: (error) => {
          // Ending the job removes copy-before-write at once; the transfer then fails.
          domain.abortJob().catch(() => undefined);
          stopRun.abort(error);
        },
      });
      await guard.start();
    };
    if (transport === 'pull') {
      const opened = await openExports(context, disks, join(socketDir!, 'export.sock'), runSignal);
      try {
        await startGuard(async () => pullSpaceNeed(domain, opened));
        await context.hooks.afterJobStart?.();
        await copyDisks(context, opened, runSignal);
      } finally {
        await Promise.all(opened.map((entry) => entry.source.close().catch(() => undefined)));
      }
      guard?.stop();
      await domain.abortJob();
      await domain.waitForJob({ timeoutMs: 120_000 });
      jobRunning = false;
    } else {
      await startGuard(async () => pushSpaceNeed(domain, disks));
      await context.hooks.afterJobStart?.();
      await domain.waitForJob({ timeoutMs: 24 * 3600_000, signal: runSignal });
      guard?.stop();
      jobRunning = false;
      await waitForTargetsReleased(blockJobs, disks.map((d) => d.target));
      for (const disk of disks) {
        if (disk.backingFile !== null) await qemuImgRebaseUnsafe(set.pathOf(disk.file), disk.backingFile, { signal });
        disk.virtualSize = (await qemuImgInfo(set.pathOf(disk.file))).virtualSize;
        disk.dataBytes = await qemuImgOwnDataBytes(set.pathOf(disk.file));
        emit({ type: 'disk-done', target: disk.target, file: disk.file, dataBytes: disk.dataBytes });
      }
    }
    signal?.throwIfAborted();
    const checkpoint = await domain.lookupCheckpointByName(checkpointName);
    const checkpointXml = await checkpoint.getXMLDesc();
    // One hashing pass per file, all files at once (they are independent).
    const records: DiskRecord[] = await Promise.all(
      disks.map(async (disk): Promise<DiskRecord> => {
        const path = set.pathOf(disk.file);
        const [size, checksum] = disk.written
          ? [disk.written.fileSize, disk.written.checksum]
          : await Promise.all([stat(path).then((s) => s.size), checksumFile(path, undefined, signal ? { signal } : {})]);
        return {
          target: disk.target,
          sourceFormat: disk.format,
          level: disk.level,
          file: disk.file,
          backingFile: disk.backingFile,
          virtualSize: disk.virtualSize,
          fileSize: size,
          dataBytes: disk.dataBytes,
          checksum,
        };
      }),
    );
    const record: BackupRecord = {
      id: backupId,
      level: plan.level,
      transport,
      startedAt,
      completedAt: new Date().toISOString(),
      checkpoint: checkpointName,
      checkpointXml,
      parent: plan.parent?.id ?? null,
      disks: records,
    };
    await set.commitBackup(record, { verifyChecksums: false, ...(signal ? { signal } : {}) });
    committed = true;
    await recordVerifiedFiles(set.dir, records, set.referencedFiles());
    const durationMs = Date.now() - context.started;
    const dataBytes = records.reduce((sum, d) => sum + d.dataBytes, 0);
    emit({ type: 'done', backupId, level: plan.level, durationMs, dataBytes });
    return { backupId, level: plan.level, transport, checkpoint: checkpointName, disks: records, notices: context.notices, durationMs };
  } catch (error) {
    guard?.stop();
    const explained = guard?.error ?? (await explainFailure(context, error, checkpointName));
    if (jobRunning) {
      await domain.abortJob().catch(() => undefined);
      await domain.waitForJob({ timeoutMs: 60_000 }).catch(() => undefined);
    }
    if (!committed) {
      await run.abort().catch(() => undefined);
      await forgetCheckpoint(context, checkpointName, backupId);
    }
    if (signal?.aborted) throw new BackupError('ABORTED', `backup of ${domain.name} was interrupted; nothing was kept from it`, { cause: error });
    if (explained !== undefined) throw explained;
    if (error instanceof ChainBrokenError) throw error;
    if (error instanceof LibvirtError && jobRunning) {
      throw new BackupError('JOB_FAILED', `backup job on ${domain.name} failed: ${error.message}`, { cause: error });
    }
    // What libvirt said about the job (failed, cancelled by someone else) or that it never ended.
    if (error instanceof JobFailedError) throw new BackupError('JOB_FAILED', error.message, { cause: error });
    if (error instanceof Error && error.name === 'TimeoutError') {
      throw new BackupError('JOB_FAILED', `backup job on ${domain.name} did not end in time: ${error.message}`, { cause: error });
    }
    throw error;
  } finally {
    guard?.stop();
    conn.off('block-job', onBlockJob);
    if (socketDir !== undefined) await rm(socketDir, { recursive: true, force: true });
    // Scratch outside the set: the journal does not cover it. The job has ended by now.
    for (const file of scratchOutside) await unlink(file).catch(() => undefined);
  }
}

/**
 * The checkpoint was created with the job; without the backup it serves nothing, and its
 * bitmap costs the guest on every write. When libvirt cannot delete it now (the domain
 * stopped, the daemon is gone), the set keeps its name for the next run.
 */
async function forgetCheckpoint(context: ExecuteContext, name: string, backupId: string): Promise<void> {
  try {
    await deleteCheckpointIfPresent(context.domain, name);
  } catch (error) {
    const why = error instanceof Error ? error.message : String(error);
    await addPendingCheckpoint(context.set.dir, name, `left by backup ${backupId}, which failed (${why})`).catch(() => undefined);
    context.emit({ type: 'notice', message: `checkpoint ${name} could not be deleted now (${why}); the next backup of this set deletes it` });
  }
}

/** Turns a failure caused by the domain stopping or the daemon going away into words that say so. */
async function explainFailure(context: ExecuteContext, error: unknown, checkpointName: string): Promise<BackupError | undefined> {
  if (error instanceof BackupError) return undefined;
  const { conn, domain } = context;
  let state: DomainState | undefined;
  try {
    state = (await domain.getState()).state;
  } catch {
    if (!(await conn.isAlive().catch(() => false))) {
      return new BackupError(
        'DAEMON_LOST',
        `lost the connection to libvirtd during backup of ${domain.name}; nothing was kept from it. The backup job and checkpoint ${checkpointName} may remain in libvirt: the next backup of this set removes them`,
        { cause: error },
      );
    }
    return undefined;
  }
  if (state !== DomainState.RUNNING && state !== DomainState.PAUSED) {
    return new BackupError('DOMAIN_STOPPED', `domain ${domain.name} stopped during the backup (${DomainState[state] ?? state}); nothing was kept from it`, { cause: error });
  }
  return undefined;
}

function checkpointSpecFor(context: ExecuteContext, disks: DiskPlan[], name: string, backupId: string): CheckpointSpec {
  const domainTargets = context.summary.disks.map((d) => d.target?.dev).filter((t): t is string => t !== undefined);
  return {
    name,
    description: `libvirt-backup ${context.plan.level} backup ${backupId}`,
    disks: domainTargets.map((target) =>
      disks.find((d) => d.target === target)?.tracksChanges ? { name: target, checkpoint: 'bitmap' as const } : { name: target, checkpoint: 'no' as const },
    ),
  };
}

function backupSpecFor(context: ExecuteContext, disks: DiskPlan[], socket: string | undefined, scratchPaths: Map<string, string>): BackupSpec {
  const { plan, set } = context;
  const domainTargets = context.summary.disks.map((d) => d.target?.dev).filter((t): t is string => t !== undefined);
  const selected = new Set(disks.map((d) => d.target));
  const incremental = plan.level === 'full' ? undefined : plan.parent!.checkpoint!;
  const unselected = domainTargets.filter((t) => !selected.has(t)).map((name) => ({ name, backup: 'no' as const }));
  const fullMode = (disk: DiskPlan) => (incremental !== undefined && disk.level === 'full' ? { backupmode: 'full' as const } : {});
  if (socket !== undefined) {
    return {
      mode: 'pull',
      ...(incremental !== undefined ? { incremental } : {}),
      server: { transport: 'unix', socket },
      disks: [
        ...disks.map((disk) => ({ name: disk.target, backup: 'yes' as const, ...fullMode(disk), type: 'file' as const, scratch: { file: scratchPaths.get(disk.target)! } })),
        ...unselected,
      ],
    };
  }
  return {
    mode: 'push',
    ...(incremental !== undefined ? { incremental } : {}),
    disks: [
      ...disks.map((disk) => ({ name: disk.target, backup: 'yes' as const, ...fullMode(disk), type: 'file' as const, target: { file: set.pathOf(disk.file) }, driver: { type: 'qcow2' } })),
      ...unselected,
    ],
  };
}

/** Pull: what copy-before-write may still add to the scratch files, and what the backup files still receive. */
async function pullSpaceNeed(domain: Domain, opened: readonly OpenedExport[]): Promise<SpaceNeed> {
  const bound = opened.reduce((sum, entry) => sum + entry.scratchBound, 0);
  // libvirt answers job queries with "backup job data missing" while a job starts or
  // ends: counting nothing as used then only makes the need larger.
  const stats = await domain.getJobStats().catch(() => undefined);
  const scratchUsed = stats?.diskTempUsed ?? 0;
  return {
    scratch: Math.max(0, bound - scratchUsed),
    output: opened.reduce((sum, entry) => sum + Math.max(0, entry.fileSize - entry.written), 0),
  };
}

/** Push: libvirt says what it still has to write; the files are written by QEMU, copy-before-write included. */
async function pushSpaceNeed(domain: Domain, disks: readonly DiskPlan[]): Promise<SpaceNeed> {
  const stats = await domain.getJobStats().catch(() => undefined);
  const remaining = stats?.diskRemaining ?? (stats?.diskTotal !== undefined && stats.diskProcessed !== undefined ? stats.diskTotal - stats.diskProcessed : undefined);
  // Before libvirt reports figures, assume every disk may be written whole.
  const fallback = disks.reduce((sum, disk) => sum + disk.virtualSize, 0);
  return { scratch: 0, output: remaining ?? fallback };
}

/** libvirt closes a push target after the job event; the block-job event follows that. */
async function waitForTargetsReleased(events: BlockJobPayload[], targets: string[]): Promise<void> {
  const deadline = Date.now() + 60_000;
  const done = () => targets.every((t) => events.some((e) => e.disk === t && e.status !== BlockJobStatus.READY));
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`libvirt did not release the backup targets of ${targets.join(', ')}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const failed = events.find((e) => targets.includes(e.disk) && e.status !== BlockJobStatus.COMPLETED);
  if (failed) throw new BackupError('JOB_FAILED', `backup of disk ${failed.disk} ended with status ${BlockJobStatus[failed.status] ?? failed.status}`);
}

/**
 * Connects to every disk's export and works out what will be copied from it, before any
 * data moves: the space guard needs the whole run's figures from the start.
 */
async function openExports(context: ExecuteContext, disks: DiskPlan[], socket: string, signal: AbortSignal): Promise<OpenedExport[]> {
  const spec = await context.domain.backupGetSpec();
  const exports = new Map<string, { name: string; bitmap?: string }>();
  if (spec.mode === 'pull') {
    for (const d of spec.disks ?? []) {
      if (d.backup === 'no') continue;
      exports.set(d.name, { name: d.exportname ?? d.name, ...(d.exportbitmap !== undefined ? { bitmap: d.exportbitmap } : {}) });
    }
  }
  const opened: OpenedExport[] = [];
  try {
    for (const disk of disks) opened.push(await openExport(disk, socket, exports.get(disk.target) ?? { name: disk.target }, signal));
  } catch (error) {
    await Promise.all(opened.map((entry) => entry.source.close().catch(() => undefined)));
    throw error;
  }
  return opened;
}

async function openExport(disk: DiskPlan, socket: string, exported: { name: string; bitmap?: string }, signal: AbortSignal): Promise<OpenedExport> {
  const dirtyContext = disk.level !== 'full' && exported.bitmap !== undefined ? `qemu:dirty-bitmap:${exported.bitmap}` : undefined;
  if (disk.level !== 'full' && dirtyContext === undefined) {
    throw new BackupError('JOB_FAILED', `libvirt exported ${disk.target} without a dirty bitmap for an ${disk.level} backup`);
  }
  const source = await NbdClient.connect({
    path: socket,
    exportName: exported.name,
    metaContexts: dirtyContext ? ['base:allocation', dirtyContext] : ['base:allocation'],
    signal,
  });
  try {
    disk.virtualSize = source.size;
    // Data the disk holds (allocated, not reading as zeroes): what a full copies, and
    // the most copy-before-write can ever put in the scratch, whatever the level.
    const allocated: Array<{ offset: number; length: number }> = [];
    for await (const extent of source.extents(BASE_ALLOCATION, undefined, { signal })) {
      if (!(extent.flags & AllocationFlags.ZERO)) allocated.push(extent);
    }
    // The clusters this file stores: what changed (incremental), or what is allocated
    // and not zero (full). Everything else reads from the backing file, or as zeroes.
    let stored = allocated;
    if (dirtyContext) {
      stored = [];
      for await (const extent of source.extents(dirtyContext, undefined, { signal })) {
        if (extent.flags & DirtyBitmapFlags.DIRTY) stored.push(extent);
      }
    }
    const runs = clusterRuns(stored);
    const scratchBound = clusterRuns(allocated).reduce((sum, run) => sum + run.count * CLUSTER_SIZE, 0);
    const fileSize = planQcow2({ virtualSize: source.size, runs, ...(disk.backingFile !== null ? { backingFile: disk.backingFile, backingFormat: 'qcow2' } : {}) }).fileSize;
    return { disk, source, runs, fileSize, written: 0, scratchBound };
  } catch (error) {
    await source.close().catch(() => undefined);
    throw error;
  }
}

async function copyDisks(context: ExecuteContext, opened: OpenedExport[], signal: AbortSignal): Promise<void> {
  const queue = [...opened];
  const failures: unknown[] = [];
  const worker = async () => {
    while (queue.length > 0 && failures.length === 0) {
      const entry = queue.shift()!;
      try {
        await copyDisk(context, entry, signal);
      } catch (error) {
        failures.push(error);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(context.concurrency, opened.length)) }, worker));
  if (failures.length > 0) throw failures[0];
  signal.throwIfAborted();
}

async function copyDisk(context: ExecuteContext, entry: OpenedExport, signal: AbortSignal): Promise<void> {
  const { set, emit } = context;
  const { disk, source, runs } = entry;
  // Whole clusters are read, so a cluster only partly dirty still gets its current
  // bytes, never zeroes standing in for data the backing file has.
  const chunks = (async function* () {
    for (const run of runs) {
      const offset = run.start * CLUSTER_SIZE;
      const length = Math.min(run.count * CLUSTER_SIZE, source.size - offset);
      for await (const chunk of source.chunks({ range: { offset, length }, reuseMemory: 'until-release', signal })) {
        if (chunk.kind === 'data') entry.written += chunk.length;
        yield chunk;
      }
    }
  })();
  // Progress follows the data to copy (known from block status), not the disk's size:
  // a 2 GiB disk holding 1 GiB shows 1 GiB to go, at the rate data really moves.
  let lastProgress = 0;
  let copied = 0;
  const total = runs.reduce((sum, run) => sum + Math.min(run.count * CLUSTER_SIZE, source.size - run.start * CLUSTER_SIZE), 0);
  const written = await writeQcow2(
    set.pathOf(disk.file),
    {
      virtualSize: source.size,
      runs,
      ...(disk.backingFile !== null ? { backingFile: disk.backingFile, backingFormat: 'qcow2' } : {}),
    },
    chunks,
    {
      signal,
      onProgress: () => {
        copied = entry.written;
        const now = Date.now();
        if (now - lastProgress < PROGRESS_INTERVAL_MS) return;
        lastProgress = now;
        emit({ type: 'progress', target: disk.target, bytesDone: Math.min(copied, total), bytesTotal: total });
      },
    },
  );
  entry.written = entry.fileSize;
  disk.dataBytes = written.dataBytes;
  disk.written = { fileSize: written.fileSize, checksum: written.checksum };
  emit({ type: 'progress', target: disk.target, bytesDone: total, bytesTotal: total });
  emit({ type: 'disk-done', target: disk.target, file: disk.file, dataBytes: disk.dataBytes });
}
