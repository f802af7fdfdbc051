// The backup engine: one run of `libvirt-backup backup`. It decides the level,
// makes libvirt create the next checkpoint atomically with the backup, moves
// the data (pull: our NBD client reads libvirt's export and our one-pass writer
// makes the qcow2 files; push: libvirt writes them and we rebase), and commits the
// result to the set. Any failure or abort ends the libvirt job, removes this
// run's files and its checkpoint, and leaves manifest.json as it was.
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { Checkpoint } from '../checkpoint.js';
import { connect, type Connection } from '../connection.js';
import { BlockJobStatus, BlockJobType, CheckpointCreateFlags, CheckpointXMLFlags, DomainState, JobType } from '../constants.js';
import type { Domain } from '../domain.js';
import { LibvirtError } from '../errors.js';
import type { BlockJobPayload } from '../events.js';
import { AllocationFlags, BASE_ALLOCATION, DirtyBitmapFlags, NbdClient } from '../nbd/index.js';
import { parseDomainXml, type BackupSpec, type CheckpointSpec, type DomainSummary } from '../xml/index.js';
import { BackupSet } from './backup-set.js';
import { assertChainIntact } from './chain-check.js';
import { checksumFile } from './checksum.js';
import { selectDisks, type SelectedDisk } from './disk-selection.js';
import { BackupError, type BackupEvent, type BackupOptions, type BackupResult, type RequestedLevel } from './engine-types.js';
import type { BackupLevel, BackupRecord, DiskRecord } from './manifest.js';
import { qemuImgInfo, qemuImgOwnDataBytes, qemuImgRebaseUnsafe } from './qemu-img.js';
import { CLUSTER_SIZE, clusterRuns } from './qcow2-layout.js';
import { writeQcow2 } from './qcow2-writer.js';

export * from './engine-types.js';

/** Checkpoints this tool creates start with this; others on the domain are left alone. */
export const CHECKPOINT_PREFIX = 'lvb-';
const SOCKET_DIR_PREFIX = 'lvb-backup-';
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

  const ownConnection = options.connection === undefined;
  const conn = options.connection ?? (await connect(options.uri ?? 'qemu:///system'));
  try {
    const domain = await lookupDomain(conn, options.domain);
    await conn.assertBackupSupport();
    const { state } = await domain.getState();
    if (state !== DomainState.RUNNING && state !== DomainState.PAUSED) {
      throw new BackupError('DOMAIN_NOT_RUNNING', `domain ${domain.name} is not running (${DomainState[state] ?? state}); libvirt backs up running domains only`);
    }
    const summary = parseDomainXml(await domain.getXMLDesc());
    const selection = selectDisks(summary, options.disks);
    for (const skipped of selection.skipped) emit({ type: 'notice', message: `skipping ${skipped.target}: ${skipped.reason}` });

    const set = await BackupSet.openOrCreate(options.dest, { name: domain.name, uuid: domain.uuid, xml: summary.xml });
    try {
      if (set.recovery && (set.recovery.removedFiles?.length ?? 0) > 0) {
        emit({ type: 'notice', message: `cleaned up after an interrupted run: removed ${set.recovery.removedFiles.join(', ')}` });
      }
      await endLeftoverJob(domain, emit);
      const plan = await planLevel(set, requested, domain, selection.disks, emit);
      const context = { conn, domain, summary, set, plan, selection: selection.disks, transport, signal, emit, started, notices, concurrency: options.concurrency ?? 2 };
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
    if (ownConnection) await conn.close();
  }
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

/** A job left by a run that died (its socket dir is ours) is ended; anyone else's is reported. */
async function endLeftoverJob(domain: Domain, emit: (event: BackupEvent) => void): Promise<void> {
  const job = await domain.getJobInfo();
  if (job.type === JobType.NONE) return;
  let spec: BackupSpec | undefined;
  try {
    spec = await domain.backupGetSpec();
  } catch {
    spec = undefined;
  }
  const socket = spec?.mode === 'pull' && spec.server?.transport === 'unix' ? spec.server.socket : undefined;
  if (socket !== undefined && socket.includes(`/${SOCKET_DIR_PREFIX}`)) {
    await domain.abortJob();
    emit({ type: 'notice', message: `ended a pull backup job left behind by an interrupted run (${socket})` });
    return;
  }
  throw new BackupError('DOMAIN_BUSY', `domain ${domain.name} already has a job running (${JobType[job.type] ?? job.type}); wait for it or abort it`);
}

async function planLevel(
  set: BackupSet,
  requested: RequestedLevel,
  domain: Domain,
  disks: readonly SelectedDisk[],
  emit: (event: BackupEvent) => void,
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
    if (parent.disks.some((d) => d.target === disk.target)) await assertChainIntact(set, set.chainFor(disk.target, parent.id));
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

async function findCheckpoint(domain: Domain, name: string): Promise<Checkpoint | undefined> {
  try {
    return await domain.lookupCheckpointByName(name);
  } catch (error) {
    if (error instanceof LibvirtError && error.codeName === 'VIR_ERR_NO_DOMAIN_CHECKPOINT') return undefined;
    throw error;
  }
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
}

async function execute(context: ExecuteContext): Promise<BackupResult> {
  const { conn, domain, summary, set, plan, selection, transport, signal, emit } = context;
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
  const scratch = new Map(disks.map((disk) => [disk.target, `.scratch-${backupId}-${disk.target}.qcow2`]));
  const run = await set.beginRun([...disks.map((disk) => disk.file), ...(transport === 'pull' ? scratch.values() : [])]);
  const socketDir = await mkdtemp(join(tmpdir(), SOCKET_DIR_PREFIX));
  const blockJobs: BlockJobPayload[] = [];
  const onBlockJob = (d: Domain, payload: BlockJobPayload) => {
    if (d.uuid === domain.uuid && payload.type === BlockJobType.BACKUP) blockJobs.push(payload);
  };
  conn.on('block-job', onBlockJob);
  let jobRunning = false;
  let committed = false;
  try {
    await conn.eventsReady();
    const domainTargets = summary.disks.map((d) => d.target?.dev).filter((t): t is string => t !== undefined);
    const selected = new Set(disks.map((d) => d.target));
    const checkpointSpec: CheckpointSpec = {
      name: checkpointName,
      description: `libvirt-backup ${plan.level} backup ${backupId}`,
      disks: domainTargets.map((target) =>
        disks.find((d) => d.target === target)?.tracksChanges ? { name: target, checkpoint: 'bitmap' as const } : { name: target, checkpoint: 'no' as const },
      ),
    };
    const incremental = plan.level === 'full' ? undefined : plan.parent!.checkpoint!;
    const unselected = domainTargets.filter((t) => !selected.has(t)).map((name) => ({ name, backup: 'no' as const }));
    const fullMode = (disk: DiskPlan) => (incremental !== undefined && disk.level === 'full' ? { backupmode: 'full' as const } : {});
    const spec: BackupSpec =
      transport === 'pull'
        ? {
            mode: 'pull',
            ...(incremental !== undefined ? { incremental } : {}),
            server: { transport: 'unix', socket: join(socketDir, 'export.sock') },
            disks: [
              ...disks.map((disk) => ({ name: disk.target, backup: 'yes' as const, ...fullMode(disk), type: 'file' as const, scratch: { file: set.pathOf(scratch.get(disk.target)!) } })),
              ...unselected,
            ],
          }
        : {
            mode: 'push',
            ...(incremental !== undefined ? { incremental } : {}),
            disks: [
              ...disks.map((disk) => ({ name: disk.target, backup: 'yes' as const, ...fullMode(disk), type: 'file' as const, target: { file: set.pathOf(disk.file) }, driver: { type: 'qcow2' } })),
              ...unselected,
            ],
          };
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
      if (error instanceof LibvirtError && error.codeName === 'VIR_ERR_CHECKPOINT_INCONSISTENT' && incremental !== undefined) {
        throw new ChainBrokenError(`the bitmap of checkpoint ${incremental} is missing or broken (${error.message})`, { cause: error });
      }
      throw error;
    }
    jobRunning = true;
    if (transport === 'pull') {
      await pullDisks(context, disks, set, join(socketDir, 'export.sock'));
      await domain.abortJob();
      await domain.waitForJob({ timeoutMs: 120_000 });
      jobRunning = false;
    } else {
      await domain.waitForJob({ timeoutMs: 24 * 3600_000, ...(signal ? { signal } : {}) });
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
    const durationMs = Date.now() - context.started;
    const dataBytes = records.reduce((sum, d) => sum + d.dataBytes, 0);
    emit({ type: 'done', backupId, level: plan.level, durationMs, dataBytes });
    return { backupId, level: plan.level, transport, checkpoint: checkpointName, disks: records, notices: context.notices, durationMs };
  } catch (error) {
    if (jobRunning) {
      await domain.abortJob().catch(() => undefined);
      await domain.waitForJob({ timeoutMs: 60_000 }).catch(() => undefined);
    }
    if (!committed) {
      await run.abort().catch(() => undefined);
      // The checkpoint was created with the job; without the backup it serves nothing.
      const leftover = await findCheckpoint(domain, checkpointName).catch(() => undefined);
      await leftover?.delete().catch(() => undefined);
    }
    if (signal?.aborted) throw new BackupError('ABORTED', `backup of ${domain.name} was interrupted; nothing was kept from it`, { cause: error });
    if (error instanceof ChainBrokenError) throw error;
    if (error instanceof LibvirtError && jobRunning) {
      throw new BackupError('JOB_FAILED', `backup job on ${domain.name} failed: ${error.message}`, { cause: error });
    }
    throw error;
  } finally {
    conn.off('block-job', onBlockJob);
    await rm(socketDir, { recursive: true, force: true });
  }
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

async function pullDisks(context: ExecuteContext, disks: DiskPlan[], set: BackupSet, socket: string): Promise<void> {
  const { domain, signal } = context;
  const spec = await domain.backupGetSpec();
  const exports = new Map<string, { name: string; bitmap?: string }>();
  if (spec.mode === 'pull') {
    for (const d of spec.disks ?? []) {
      if (d.backup === 'no') continue;
      exports.set(d.name, { name: d.exportname ?? d.name, ...(d.exportbitmap !== undefined ? { bitmap: d.exportbitmap } : {}) });
    }
  }
  const queue = [...disks];
  const failures: unknown[] = [];
  const worker = async () => {
    while (queue.length > 0 && failures.length === 0) {
      const disk = queue.shift()!;
      try {
        await pullDisk(context, disk, set, socket, exports.get(disk.target) ?? { name: disk.target });
      } catch (error) {
        failures.push(error);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(context.concurrency, disks.length)) }, worker));
  if (failures.length > 0) throw failures[0];
  signal?.throwIfAborted();
}

async function pullDisk(
  context: ExecuteContext,
  disk: DiskPlan,
  set: BackupSet,
  socket: string,
  exported: { name: string; bitmap?: string },
): Promise<void> {
  const { signal, emit } = context;
  const dirtyContext = disk.level !== 'full' && exported.bitmap !== undefined ? `qemu:dirty-bitmap:${exported.bitmap}` : undefined;
  if (disk.level !== 'full' && dirtyContext === undefined) {
    throw new BackupError('JOB_FAILED', `libvirt exported ${disk.target} without a dirty bitmap for an ${disk.level} backup`);
  }
  const source = await NbdClient.connect({
    path: socket,
    exportName: exported.name,
    metaContexts: dirtyContext ? ['base:allocation', dirtyContext] : ['base:allocation'],
    ...(signal ? { signal } : {}),
  });
  try {
    disk.virtualSize = source.size;
    // The clusters this file stores: what changed (incremental), or what is
    // allocated and not zero (full). Everything else reads from the backing file,
    // or as zeroes.
    const stored: Array<{ offset: number; length: number }> = [];
    if (dirtyContext) {
      for await (const extent of source.extents(dirtyContext, undefined, signal ? { signal } : {})) {
        if (extent.flags & DirtyBitmapFlags.DIRTY) stored.push(extent);
      }
    } else {
      for await (const extent of source.extents(BASE_ALLOCATION, undefined, signal ? { signal } : {})) {
        if (!(extent.flags & AllocationFlags.ZERO)) stored.push(extent);
      }
    }
    const runs = clusterRuns(stored);
    // Whole clusters are read, so a cluster only partly dirty still gets its
    // current bytes, never zeroes standing in for data the backing file has.
    const chunks = (async function* () {
      for (const run of runs) {
        const offset = run.start * CLUSTER_SIZE;
        const length = Math.min(run.count * CLUSTER_SIZE, source.size - offset);
        yield* source.chunks({ range: { offset, length }, reuseMemory: 'until-release', ...(signal ? { signal } : {}) });
      }
    })();
    let lastProgress = 0;
    const total = source.size;
    const written = await writeQcow2(
      set.pathOf(disk.file),
      {
        virtualSize: source.size,
        runs,
        ...(disk.backingFile !== null ? { backingFile: disk.backingFile, backingFormat: 'qcow2' } : {}),
      },
      chunks,
      {
        ...(signal ? { signal } : {}),
        onProgress: (guestOffset) => {
          const now = Date.now();
          if (now - lastProgress < PROGRESS_INTERVAL_MS) return;
          lastProgress = now;
          emit({ type: 'progress', target: disk.target, bytesDone: guestOffset, bytesTotal: total });
        },
      },
    );
    disk.dataBytes = written.dataBytes;
    disk.written = { fileSize: written.fileSize, checksum: written.checksum };
    emit({ type: 'progress', target: disk.target, bytesDone: total, bytesTotal: total });
    emit({ type: 'disk-done', target: disk.target, file: disk.file, dataBytes: disk.dataBytes });
  } finally {
    await source.close();
  }
}
