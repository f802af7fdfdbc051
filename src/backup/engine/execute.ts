// One run, step by step: lay out its files, start the job with its checkpoint, move the data,
// commit to the set; on any failure end the job and remove what the run created.
import { mkdtemp, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';

import { BlockJobType, DomainState, JobType } from '../../libvirt/constants.js';
import type { Domain } from '../../libvirt/domain.js';
import type { Connection } from '../../libvirt/connection.js';
import { LibvirtError } from '../../libvirt/errors.js';
import { JobFailedError } from '../../libvirt/jobs.js';
import type { BlockJobPayload } from '../../libvirt/events.js';
import type { BackupServer } from '../../xml/index.js';
import { BackupSet } from '../set/backup-set.js';
import { BackupSetError } from '../errors.js';
import { checksumFile } from '../checksum.js';
import { BackupError, type BackupResult } from './engine-types.js';
import { type BackupLevel, type BackupRecord, type DiskRecord } from '../set/manifest.js';
import { addPendingCheckpoint } from '../set/pending-checkpoints.js';
import { deleteCheckpointIfPresent } from './leftover-checkpoints.js';
import { qemuImgInfo, qemuImgOwnDataBytes, qemuImgRebaseUnsafe } from '../qcow2/qemu-img.js';
import { socketDirPrefix } from './run-dir.js';
import { SpaceGuard, type SpaceNeed } from './space-guard.js';
import { recordVerifiedFiles } from '../set/verified-files.js';
import { CHECKPOINT_PREFIX, ChainBrokenError, type DiskPlan, type ExecuteContext } from './run-context.js';
import { checkpointSpecFor, backupSpecFor } from './job-specs.js';
import { pullSpaceNeed, openExports, openOfflineExports, copyDisks, closeExports } from './pull-transfer.js';
import { PullCopyThread } from './pull-copy-thread.js';
import { backupBeginPastStaleBitmaps } from './stale-backup-bitmaps.js';
import { createOfflineCheckpoint, OfflineExports, removeOfflineCheckpoint } from './offline-images.js';
import { exportSocketToConnect, unreachableExportError } from './export-connection.js';
import { daemonLost } from './daemon-lost.js';
import { pushSpaceNeed, waitForTargetsReleased } from './push-transfer.js';
import { beginOnFreePort, describeTcpExport, remoteScratchPath, serverAddress, type TcpExport } from './remote-export.js';
import { type BackupRun } from '../set/run-journal.js';
import { withGuestFrozen, type QuiesceOutcome } from './quiesce.js';

/** What one run creates, named before any of it exists. */
interface RunLayout {
  backupId: string;
  checkpointName: string;
  startedAt: string;
  disks: DiskPlan[];
  /** Pull scratch file of each disk target. */
  scratchPaths: Map<string, string>;
  /** Scratch files the set's journal lists (they live in the set). */
  scratchInSet: string[];
  /** Scratch files outside the set: the domain lock records them instead. */
  scratchOutside: string[];
  socketDir: string | undefined;
}

/** The state of a run that the failure and clean-up paths need to see. */
class RunState {
  readonly blockJobs: BlockJobPayload[] = [];
  /** Ends the data transfer when the run must stop for a reason of its own (space). */
  readonly stopRun = new AbortController();
  readonly signal: AbortSignal;
  guard: SpaceGuard | undefined;
  jobRunning = false;
  /** A remote pull job's export, once libvirt took a port for it. */
  exportAt: TcpExport | undefined;
  /** A shut-off domain's images, exported by qemu-nbd. */
  offlineExports: OfflineExports | undefined;
  /** Where a pull run opens, reads and writes its exports (pull-copy-thread.ts). */
  copyThread: PullCopyThread | undefined;
  /**
   * The job could not be ended, or its end not confirmed (libvirtd gone): QEMU may still
   * write the job's files, so they stay, recorded for the next run, which ends the job first.
   */
  jobMayRun = false;
  committed = false;
  /** Whether the guest's file systems were frozen while the job started. */
  quiesce: QuiesceOutcome = { quiesced: false, freeze: null };
  /**
   * The hypervisor ID of the running domain the job was started on: a domain stopped and
   * started again during the run runs again, under another ID, and a failure must still
   * be reported as its stop.
   */
  instanceId: number | null | undefined;

  constructor(readonly context: ExecuteContext) {
    this.signal = context.signal ? AbortSignal.any([context.signal, this.stopRun.signal]) : this.stopRun.signal;
  }

  readonly onBlockJob = (d: Domain, payload: BlockJobPayload): void => {
    if (d.uuid === this.context.domain.uuid && payload.type === BlockJobType.BACKUP) this.blockJobs.push(payload);
  };
}

export async function execute(context: ExecuteContext): Promise<BackupResult> {
  const layout = await layOutRun(context);
  const run = await beginRun(context, layout);
  const state = new RunState(context);
  context.conn.on('block-job', state.onBlockJob);
  // Taken now: a new thread boots while the job starts.
  if (context.transport === 'pull') state.copyThread = PullCopyThread.acquire();
  try {
    await startJob(context, layout, state);
    if (context.transport === 'pull') await pullData(context, layout, state);
    else await awaitPushedData(context, layout, state);
    context.signal?.throwIfAborted();
    return await commitRun(context, layout, state);
  } catch (error) {
    throw await failRun(context, layout, state, run, error);
  } finally {
    state.guard?.stop();
    await state.copyThread?.release();
    await state.offlineExports?.stop();
    context.conn.off('block-job', state.onBlockJob);
    if (layout.socketDir !== undefined) await rm(layout.socketDir, { recursive: true, force: true });
    // Scratch outside the set: the journal does not cover it, the domain lock's record does.
    if (state.jobMayRun) context.domainLock.keepRecordForNextRun();
    else for (const file of layout.scratchOutside) await unlink(file).catch(() => undefined);
  }
}

/** Names everything the run will create, and plans each disk's level. */
async function layOutRun(context: ExecuteContext): Promise<RunLayout> {
  const { domain, set, plan, selection, transport, emit } = context;
  const backupId = set.nextId();
  const disks: DiskPlan[] = selection.map((disk) => {
    const parentDisk = plan.parent?.disks.find((d) => d.target === disk.target);
    // A disk copies whole when it cannot track changes or the parent has no copy of it.
    const level: BackupLevel = plan.level !== 'full' && disk.tracksChanges && parentDisk !== undefined ? plan.level : 'full';
    if (plan.level !== 'full' && level === 'full') {
      emit({ type: 'notice', message: `${disk.target}: full copy (${disk.fullCopyReason ?? 'not in the parent backup'})` });
    }
    return {
      ...disk,
      level,
      file: BackupSet.fileName(disk.target, backupId, level),
      backingFile: level === 'full' ? null : parentDisk!.file,
      virtualSize: 0,
      dataBytes: 0,
    };
  });
  const scratchName = (target: string) => `.scratch-${backupId}-${target}.qcow2`;
  const scratchPaths = new Map(
    disks.map((disk) => [
      disk.target,
      context.remote !== null
        ? remoteScratchPath(context.summary, disk.target, `.lvb-scratch-${domain.uuid}-${backupId}-${disk.target}.qcow2`)
        : context.scratchDir === null
          ? set.pathOf(scratchName(disk.target))
          : join(context.scratchDir, `.lvb-scratch-${domain.uuid}-${backupId}-${disk.target}.qcow2`),
    ]),
  );
  // A shut-off domain is read from its images: no job, so no copy-before-write scratch.
  const pull = transport === 'pull' && context.offline === null;
  return {
    backupId,
    checkpointName: `${CHECKPOINT_PREFIX}${backupId}-${Date.now().toString(36)}`,
    startedAt: new Date().toISOString(),
    disks,
    scratchPaths,
    scratchInSet: pull && context.scratchDir === null && context.remote === null ? disks.map((disk) => scratchName(disk.target)) : [],
    scratchOutside: pull && context.scratchDir !== null ? [...scratchPaths.values()] : [],
    socketDir: transport === 'pull' && context.remote === null ? await mkdtemp(socketDirPrefix(context.runDir)) : undefined,
  };
}

/** Records the run's files where the next run finds them, whatever kills this one. */
async function beginRun(context: ExecuteContext, layout: RunLayout): Promise<BackupRun> {
  const { checkpointName, socketDir, scratchOutside } = layout;
  await context.domainLock.update({
    checkpoint: checkpointName,
    ...(socketDir !== undefined ? { socketDir } : {}),
    ...(scratchOutside.length > 0 ? { scratchFiles: scratchOutside } : {}),
  });
  try {
    return await context.set.beginRun([...layout.disks.map((disk) => disk.file), ...layout.scratchInSet], { checkpoint: checkpointName });
  } catch (error) {
    if (socketDir !== undefined) await rm(socketDir, { recursive: true, force: true });
    throw error;
  }
}

/** Starts the libvirt job, which creates the run's checkpoint atomically with it. */
async function startJob(context: ExecuteContext, layout: RunLayout, state: RunState): Promise<void> {
  const { conn, domain, plan, transport, signal, emit } = context;
  await conn.eventsReady();
  const specFor = (server: BackupServer | undefined) => backupSpecFor(context, layout.disks, server, layout.scratchPaths);
  const spec = specFor(layout.socketDir === undefined ? undefined : { transport: 'unix', socket: join(layout.socketDir, 'export.sock') });
  const checkpointSpec = checkpointSpecFor(context, layout.disks, layout.checkpointName, layout.backupId);
  signal?.throwIfAborted();
  if (context.offline === null) state.instanceId = await currentId(conn, domain);
  emit({
    type: 'start',
    backupId: layout.backupId,
    level: plan.level,
    transport,
    reason: plan.reason,
    disks: layout.disks.map((d) => ({ target: d.target, level: d.level, virtualSize: d.virtualSize })),
  });
  if (context.offline !== null) {
    state.offlineExports = await OfflineExports.start(layout.disks, context.offline, plan.parent, layout.socketDir!);
    return;
  }
  try {
    state.quiesce = await withGuestFrozen(context, async () => {
      if (context.remote !== null && transport === 'pull') {
        state.exportAt = await beginOnFreePort(
          context.remote,
          (server) => backupBeginPastStaleBitmaps(domain, specFor(server), checkpointSpec, emit),
          (server) => context.domainLock.update({ nbdServer: serverAddress(server) }),
        );
      } else {
        await backupBeginPastStaleBitmaps(domain, spec, checkpointSpec, emit);
      }
    });
  } catch (error) {
    // libvirtd went away during the call: it may have started the job all the same, and
    // QEMU may be writing the job's files; the failure path must not take it for none.
    if (await daemonLost(conn)) state.jobRunning = true;
    const incremental = spec.incremental;
    if (error instanceof LibvirtError && error.codeName === 'VIR_ERR_CHECKPOINT_INCONSISTENT' && incremental !== undefined) {
      throw new ChainBrokenError(`the bitmap of checkpoint ${incremental} is missing or broken (${error.message})`, { cause: error });
    }
    throw error;
  }
  state.jobRunning = true;
}

/** Watches free space for the rest of the job; running short ends the job before a guest write can fail. */
async function guardSpace(context: ExecuteContext, state: RunState, need: () => Promise<SpaceNeed>): Promise<void> {
  const { domain, set, transport } = context;
  state.guard = new SpaceGuard({
    scratchDir: transport === 'pull' && context.remote === null ? (context.scratchDir ?? set.dir) : null,
    outputDir: set.dir,
    need,
    onExhausted: (error) => {
      // Ending the job removes copy-before-write at once; the transfer then fails.
      domain.abortJob().catch(() => undefined);
      state.stopRun.abort(error);
    },
  });
  await state.guard.start();
}

/** Pull: reads every export into the run's qcow2 files, then ends the job. */
async function pullData(context: ExecuteContext, layout: RunLayout, state: RunState): Promise<void> {
  const { domain } = context;
  const endpoint = state.exportAt ?? { path: exportSocketToConnect(join(layout.socketDir!, 'export.sock')) };
  const offline = state.offlineExports;
  try {
    const opened =
      offline === undefined
        ? await openExports(context, state.copyThread!, layout.disks, endpoint, state.signal)
        : await openOfflineExports(state.copyThread!, layout.disks, offline, state.signal);
    try {
      await guardSpace(context, state, async () => pullSpaceNeed(domain, opened, context.remote === null && offline === undefined));
      await context.hooks.afterJobStart?.();
      await copyDisks(context, opened, state.signal);
    } finally {
      await closeExports(opened);
    }
  } catch (error) {
    throw unreachableExportError(error, 'path' in endpoint ? endpoint.path : describeTcpExport(endpoint));
  }
  state.guard?.stop();
  // The images must be free before the run's checkpoint adds its bitmap to them.
  if (offline !== undefined) return offline.stop();
  await domain.abortJob();
  await domain.waitForJob({ timeoutMs: 120_000 });
  state.jobRunning = false;
}

/** Push: waits for libvirt to write the files, then makes them a chain of the set. */
async function awaitPushedData(context: ExecuteContext, layout: RunLayout, state: RunState): Promise<void> {
  const { domain, set, signal, emit } = context;
  await guardSpace(context, state, async () => pushSpaceNeed(domain, layout.disks));
  await context.hooks.afterJobStart?.();
  await domain.waitForJob({ timeoutMs: 24 * 3600_000, signal: state.signal });
  state.guard?.stop();
  state.jobRunning = false;
  await waitForTargetsReleased(
    domain,
    state.blockJobs,
    layout.disks.map((d) => d.target),
    state.signal,
  );
  for (const disk of layout.disks) {
    if (disk.backingFile !== null) await qemuImgRebaseUnsafe(set.pathOf(disk.file), disk.backingFile, { signal });
    disk.virtualSize = (await qemuImgInfo(set.pathOf(disk.file))).virtualSize;
    disk.dataBytes = await qemuImgOwnDataBytes(set.pathOf(disk.file));
    emit({ type: 'disk-done', target: disk.target, file: disk.file, dataBytes: disk.dataBytes });
  }
}

/** Writes the backup into the manifest: from here on it is part of the set. */
async function commitRun(context: ExecuteContext, layout: RunLayout, state: RunState): Promise<BackupResult> {
  const { domain, set, plan, transport, signal, emit } = context;
  if (context.offline !== null) {
    await createOfflineCheckpoint(domain, context.offline, layout.disks, layout.checkpointName, set.latest()?.checkpoint ?? null);
  }
  const checkpoint = await domain.lookupCheckpointByName(layout.checkpointName);
  const checkpointXml = await checkpoint.getXMLDesc();
  const records = await diskRecords(set, layout.disks, signal);
  const record: BackupRecord = {
    id: layout.backupId,
    level: plan.level,
    transport,
    startedAt: layout.startedAt,
    completedAt: new Date().toISOString(),
    checkpoint: layout.checkpointName,
    checkpointXml,
    parent: plan.parent?.id ?? null,
    quiesced: state.quiesce.quiesced,
    disks: records,
  };
  await set.commitBackup(record, { verifyChecksums: false, ...(signal ? { signal } : {}) });
  state.committed = true;
  // A cache of verified checksums: the backup is committed whether or not it can be written.
  await recordVerifiedFiles(set.dir, records, set.referencedFiles()).catch(() => undefined);
  const durationMs = Date.now() - context.started;
  const dataBytes = records.reduce((sum, d) => sum + d.dataBytes, 0);
  emit({ type: 'done', backupId: layout.backupId, level: plan.level, durationMs, dataBytes });
  return {
    backupId: layout.backupId,
    level: plan.level,
    transport,
    checkpoint: layout.checkpointName,
    disks: records,
    notices: context.notices,
    durationMs,
    ...state.quiesce,
  };
}

/** One hashing pass per file, all files at once (they are independent); files this run wrote were hashed as they were written. */
async function diskRecords(set: BackupSet, disks: readonly DiskPlan[], signal: AbortSignal | undefined): Promise<DiskRecord[]> {
  return Promise.all(
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
        ...(disk.written?.compression ? { compression: disk.written.compression, storedBytes: disk.written.storedBytes } : {}),
      };
    }),
  );
}

/** Ends the job, removes what the run created, and returns the error the caller should see. */
async function failRun(context: ExecuteContext, layout: RunLayout, state: RunState, run: BackupRun, error: unknown): Promise<unknown> {
  const { domain } = context;
  state.guard?.stop();
  const explained = state.guard?.error ?? (await explainFailure(context, error, layout.checkpointName, state.instanceId));
  if (state.jobRunning) state.jobMayRun = !(await endJob(domain));
  let leftFiles: unknown;
  if (!state.committed) {
    if (state.jobMayRun) {
      const written = context.transport === 'pull' ? layout.scratchInSet : layout.disks.map((disk) => disk.file);
      await run.keepForNextRun(written);
      context.emit({
        type: 'notice',
        message: `the backup job may still be running: the files it writes are kept until the next backup of ${domain.name} ends it`,
      });
    } else {
      leftFiles = await run.abort().then(
        () => undefined,
        (cleanupError: unknown) => cleanupError,
      );
    }
    await forgetCheckpoint(context, layout.checkpointName, layout.backupId);
  }
  const reported = reportedFailure(context, state, error, explained);
  if (leftFiles === undefined) return reported;
  // Exit codes promise that a refused destination changed nothing: files left say otherwise.
  const why = leftFiles instanceof Error ? leftFiles.message : String(leftFiles);
  const said = reported instanceof Error ? reported.message : String(reported);
  return new BackupSetError(
    'SET_IO',
    `${said}; the files of backup ${layout.backupId} could not be removed (${why}): the next backup or prune of this set removes them`,
    {
      path: context.set.dir,
    },
  );
}

/** Aborts the job and waits for it to end; false when its end cannot be confirmed. */
async function endJob(domain: Domain): Promise<boolean> {
  await domain.abortJob().catch(() => undefined);
  await domain.waitForJob({ timeoutMs: 60_000 }).catch(() => undefined);
  try {
    return (await domain.getJobInfo()).type === JobType.NONE;
  } catch {
    // libvirt answers no job query for a domain that is not running: its job died with its QEMU.
    return domain.getState().then(
      ({ state }) => state !== DomainState.RUNNING && state !== DomainState.PAUSED,
      () => false,
    );
  }
}

/** The error the caller sees for a failed run. */
function reportedFailure(context: ExecuteContext, state: RunState, error: unknown, explained: BackupError | undefined): unknown {
  const { domain, signal } = context;
  if (signal?.aborted) return new BackupError('ABORTED', `backup of ${domain.name} was interrupted; nothing was kept from it`, { cause: error });
  if (explained !== undefined) return explained;
  if (error instanceof ChainBrokenError) return error;
  if (error instanceof LibvirtError && state.jobRunning) {
    return new BackupError('JOB_FAILED', `backup job on ${domain.name} failed: ${error.message}`, { cause: error });
  }
  // What libvirt said about the job (failed, cancelled by someone else) or that it never ended.
  if (error instanceof JobFailedError) return new BackupError('JOB_FAILED', error.message, { cause: error });
  if (error instanceof Error && error.name === 'TimeoutError') {
    return new BackupError('JOB_FAILED', `backup job on ${domain.name} did not end in time: ${error.message}`, { cause: error });
  }
  return error;
}

/**
 * The checkpoint was created with the job; without the backup it serves nothing, and its
 * bitmap costs the guest on every write. When libvirt cannot delete it now (the domain
 * stopped, the daemon is gone), the set keeps its name for the next run.
 */
async function forgetCheckpoint(context: ExecuteContext, name: string, backupId: string): Promise<void> {
  if (context.offline !== null) {
    await removeOfflineCheckpoint(context.domain, context.offline.values(), name);
    return;
  }
  try {
    await deleteCheckpointIfPresent(context.domain, name);
  } catch (error) {
    const why = error instanceof Error ? error.message : String(error);
    await addPendingCheckpoint(context.set.dir, name, `left by backup ${backupId}, which failed (${why})`).catch(() => undefined);
    context.emit({ type: 'notice', message: `checkpoint ${name} could not be deleted now (${why}); the next backup of this set deletes it` });
  }
}

/** How long libvirt may take to see that a QEMU that went away has stopped. */
const QEMU_GONE_SETTLE_MS = 1000;

/** The domain's hypervisor ID now: a handle keeps the one it was looked up with. */
async function currentId(conn: Connection, domain: Domain): Promise<number | null> {
  return (await conn.lookupDomainByUUID(domain.uuid)).getId();
}

/** Turns a failure caused by the domain stopping or the daemon going away into words that say so. */
async function explainFailure(
  context: ExecuteContext,
  error: unknown,
  checkpointName: string,
  instanceId: number | null | undefined,
): Promise<BackupError | undefined> {
  // A failed transfer is what a stopped domain or a lost daemon looks like from the NBD side.
  if (error instanceof BackupError && error.code !== 'JOB_FAILED') return undefined;
  // A shut-off domain read from its images did not stop: what failed says so itself.
  if (context.offline !== null) return undefined;
  const { conn, domain } = context;
  let state: DomainState | undefined;
  let restarted: boolean;
  try {
    state = (await domain.getState()).state;
    const running = () => state === DomainState.RUNNING || state === DomainState.PAUSED;
    // Stopped and started again under the run (a watchdog, an operator's reset): running,
    // but not the QEMU the job was started on.
    const startedAgain = async () => instanceId !== undefined && running() && (await currentId(conn, domain)) !== instanceId;
    restarted = await startedAgain();
    // QEMU gone under a call or a transfer (its monitor or its NBD server closed) shows
    // before libvirt has marked the domain shut off: asked once more, a moment later.
    const qemuMayBeGone = error instanceof LibvirtError || (error instanceof BackupError && error.code === 'JOB_FAILED');
    if (!restarted && running() && qemuMayBeGone && !context.signal?.aborted) {
      await new Promise((resolveWait) => setTimeout(resolveWait, QEMU_GONE_SETTLE_MS));
      state = (await domain.getState()).state;
      restarted = await startedAgain();
    }
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
  if (restarted) {
    return new BackupError('DOMAIN_STOPPED', `domain ${domain.name} stopped during the backup and was started again; nothing was kept from it`, {
      cause: error,
    });
  }
  if (state !== DomainState.RUNNING && state !== DomainState.PAUSED) {
    return new BackupError('DOMAIN_STOPPED', `domain ${domain.name} stopped during the backup (${DomainState[state] ?? state}); nothing was kept from it`, {
      cause: error,
    });
  }
  return undefined;
}
