// The backup engine: one run of `libvirt-backup backup`. It decides the level,
// makes libvirt create the next checkpoint atomically with the backup, moves
// the data (pull: our NBD client reads libvirt's export and our one-pass writer
// makes the qcow2 files; push: libvirt writes them and we rebase), and commits the
// result to the set. Any failure or abort ends the libvirt job, removes this
// run's files and its checkpoint, and leaves manifest.json as it was.
import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';

import { connect, type Connection } from '../../libvirt/connection.js';
import { DomainState } from '../../libvirt/constants.js';
import type { Domain } from '../../libvirt/domain.js';
import { LibvirtError } from '../../libvirt/errors.js';
import { parseDomainXml, type DomainSummary } from '../../xml/index.js';
import { BackupSet } from '../set/backup-set.js';
import { selectDisks } from './disk-selection.js';
import { DomainLock } from './domain-lock.js';
import { asDaemonLost } from './daemon-lost.js';
import { BackupError, type BackupEvent, type BackupOptions, type BackupResult, type RequestedLevel } from './engine-types.js';
import { deletePendingCheckpoints } from './leftover-checkpoints.js';
import { ensureRunDir, sweepDeadSocketDirs } from './run-dir.js';
import { ChainBrokenError, type ExecuteContext } from './run-context.js';
import { planLevel } from './level-plan.js';
import { endLeftoverJob, cleanUpAfterInterruptedRun } from './interrupted-run.js';
import { qemuStillRunning } from './orphan-qemu.js';
import { execute } from './execute.js';
import { CLUSTER_COMPRESSIONS } from '../qcow2/cluster-compression.js';
import { planRemoteRun } from './remote-export.js';
import { planQuiesce, thawAfterInterruptedRun, type QuiescePlan } from './quiesce.js';
import { offlineImages } from './offline-images.js';
import { startPausedForRun, stopAfterRun } from './paused-start.js';
import { PullCopyThread } from './pull-copy-thread.js';

export * from './engine-types.js';
export { CHECKPOINT_PREFIX } from './run-context.js';

/**
 * Backs up a domain's disks into a backup set: picks full or incremental from the set and the domain's checkpoints, runs the libvirt backup job (pull
 * over NBD or push), writes the qcow2 files and records them in the manifest. Rejects with a `BackupError`.
 */
export async function runBackup(options: BackupOptions): Promise<BackupResult> {
  const started = Date.now();
  const notices: string[] = [];
  const emit = (event: BackupEvent) => {
    if (event.type === 'notice') notices.push(event.message);
    options.onEvent?.(event);
  };
  options.signal?.throwIfAborted();
  const requested = checkLevel(options.level ?? 'auto');
  const transport = checkTransport(options.transport ?? 'pull');
  checkCompression(options.compress, transport);
  const scratchDir = options.scratchDir === undefined ? null : await checkScratchDir(options.scratchDir, transport);
  // The copy thread boots while the domain, the set and the chain are checked.
  if (transport === 'pull') PullCopyThread.prewarm();

  const ownConnection = options.connection === undefined;
  const conn = options.connection ?? (await connect(options.uri ?? 'qemu:///system'));
  try {
    const run: RunStart = { conn, options, requested, transport, scratchDir, started, notices, emit };
    const inspected = await inspectDomain(run);
    const quiesce = await planQuiesce(inspected.domain, options, emit);
    return await backUpUnderDomainLock({ ...run, quiesce }, inspected);
  } catch (error) {
    throw await asDaemonLost(conn, options.domain, error);
  } finally {
    if (ownConnection) await conn.close();
  }
}

/** What a run knows before it looks at the domain. */
interface RunStart {
  conn: Connection;
  options: BackupOptions;
  requested: RequestedLevel;
  transport: 'pull' | 'push';
  scratchDir: string | null;
  started: number;
  notices: string[];
  emit: (event: BackupEvent) => void;
}

/** A run whose guest agent was asked what it can freeze. */
interface QuiescedRun extends RunStart {
  quiesce: QuiescePlan;
}

/** What the checks of the domain found, before anything is created. */
export interface InspectedDomain {
  domain: Domain;
  remote: ExecuteContext['remote'];
  summary: DomainSummary;
  selection: ReturnType<typeof selectDisks>;
  /** A shut-off domain read from these images; null when libvirt's job reads it. */
  offline: ExecuteContext['offline'];
  /** A shut-off domain started paused for the run, and stopped after it. */
  startPaused: boolean;
}

/** The domain a run (or an estimate) would back up, checked, with the disks it would take. */
export async function inspectDomainForRun(
  conn: Connection,
  options: BackupOptions,
  requested: RequestedLevel,
  emit: (event: BackupEvent) => void,
): Promise<InspectedDomain> {
  const transport = checkTransport(options.transport ?? 'pull');
  return inspectDomain({ conn, options, requested, transport, scratchDir: null, started: Date.now(), notices: [], emit });
}

export function checkRequestedLevel(requested: RequestedLevel): RequestedLevel {
  return checkLevel(requested);
}

function checkLevel(requested: RequestedLevel): RequestedLevel {
  if (!['auto', 'full', 'inc', 'diff'].includes(requested)) {
    throw new BackupError('INVALID_ARGUMENT', `level must be auto, full, inc or diff, got '${String(requested)}'`);
  }
  return requested;
}

function checkTransport(transport: 'pull' | 'push'): 'pull' | 'push' {
  if (transport !== 'pull' && transport !== 'push') {
    throw new BackupError('INVALID_ARGUMENT', `transport must be pull or push, got '${String(transport)}'`);
  }
  return transport;
}

function checkCompression(compress: BackupOptions['compress'], transport: 'pull' | 'push'): void {
  if (compress === undefined) return;
  if (!(CLUSTER_COMPRESSIONS as readonly string[]).includes(compress)) {
    throw new BackupError('INVALID_ARGUMENT', `compress must be zstd or zlib, got '${String(compress)}'`);
  }
  if (transport === 'push') {
    throw new BackupError('INVALID_ARGUMENT', 'compress needs the pull transport: in a push backup QEMU writes the files, uncompressed');
  }
}

/** The domain exists, can be backed up now, and has these disks to back up. */
async function inspectDomain({ conn, options, requested, transport, emit }: RunStart): Promise<InspectedDomain> {
  const domain = await lookupDomain(conn, options.domain);
  try {
    await conn.assertBackupSupport();
  } catch (error) {
    if (error instanceof LibvirtError) throw error;
    throw new BackupError('UNSUPPORTED', error instanceof Error ? error.message : String(error), { cause: error });
  }
  const remote = await planRemoteRun(await conn.getURI(), transport, options);
  const whenShutOff = await shutOffHandling(domain, options, transport, remote !== null);
  if (requested === 'inc' || requested === 'diff') await assertSetExists(options.dest, requested);
  const summary = parseDomainXml(await domain.getXMLDesc());
  const selection = selectDisks(summary, options.disks);
  for (const skipped of selection.skipped) emit({ type: 'notice', message: `skipping ${skipped.target}: ${skipped.reason}` });
  const offline =
    whenShutOff === 'read-images'
      ? offlineImages(
          summary,
          selection.disks.map((disk) => disk.target),
        )
      : null;
  return { domain, remote, summary, selection, offline, startPaused: whenShutOff === 'start-paused' };
}

/**
 * A running (or paused) domain is backed up through libvirt's job; a shut-off one is read
 * from its images here (`read-images`), or started paused for the run when asked.
 */
async function shutOffHandling(
  domain: Domain,
  options: BackupOptions,
  transport: 'pull' | 'push',
  remote: boolean,
): Promise<'running' | 'read-images' | 'start-paused'> {
  const { state } = await domain.getState();
  if (state === DomainState.RUNNING || state === DomainState.PAUSED) return 'running';
  if (await domain.isActive()) {
    throw new BackupError('DOMAIN_NOT_RUNNING', `domain ${domain.name} is ${DomainState[state] ?? state}; wait until it runs or is shut off`);
  }
  const orphan = remote ? null : await qemuStillRunning(domain.name);
  if (orphan !== null) {
    throw new BackupError(
      'DOMAIN_BUSY',
      `libvirt reports domain ${domain.name} as shut off, but its QEMU (pid ${orphan}) still runs on this host: libvirtd has lost track of the running domain ` +
        `(restarted, it could not load the domain's saved state; its log says why), or another libvirtd runs a domain of the same name. ` +
        `Nothing was backed up: its images may be in use. If the domain is lost, shut the guest down from inside or stop that process, then restart libvirtd`,
    );
  }
  if (options.startPaused === true) return 'start-paused';
  if (remote) {
    throw new BackupError(
      'DOMAIN_NOT_RUNNING',
      `domain ${domain.name} is shut off on a remote hypervisor, whose images only a QEMU there can read: start it paused for the backup (--start-paused)`,
    );
  }
  if (transport === 'push') {
    throw new BackupError(
      'DOMAIN_NOT_RUNNING',
      `domain ${domain.name} is shut off: its images are read here (pull); a push backup needs libvirt's job, so start it paused for that (--start-paused)`,
    );
  }
  return 'read-images';
}

/**
 * One run per domain, whatever the set: under the domain lock, any backup job on the
 * domain that libvirt-backup started belongs to a run that is gone, and is cleaned up
 * before the set is opened and the level planned.
 */
async function backUpUnderDomainLock(run: QuiescedRun, inspected: InspectedDomain): Promise<BackupResult> {
  const { conn, options, transport, emit } = run;
  const { domain } = inspected;
  const runDir = await ensureRunDir();
  await sweepDeadSocketDirs(runDir);
  const domainLock = await DomainLock.acquire(runDir, { domain: { name: domain.name, uuid: domain.uuid }, set: resolve(options.dest), transport });
  try {
    // The job first, then files: a push job may still be writing the files recovery deletes.
    try {
      // A guest left frozen writes nothing: it is thawed before anything else.
      await thawAfterInterruptedRun(domain, domainLock.interrupted, emit);
      await endLeftoverJob(conn, domain, runDir, emit, domainLock.interrupted);
      await cleanUpAfterInterruptedRun(domain, domainLock.interrupted, emit);
    } catch (error) {
      await domainLock.keepInterruptedForNextRun();
      throw error;
    }
    if (!inspected.startPaused) return await backUpIntoSet(run, inspected, runDir, domainLock);
    await startPausedForRun(domain, domainLock, emit);
    try {
      return await backUpIntoSet(run, inspected, runDir, domainLock);
    } finally {
      await stopAfterRun(domain, emit);
    }
  } finally {
    await domainLock.release();
  }
}

/** The set opened (or made), the level planned, and the run executed into it. */
async function backUpIntoSet(
  run: QuiescedRun,
  { domain, remote, summary, selection, offline }: InspectedDomain,
  runDir: string,
  domainLock: DomainLock,
): Promise<BackupResult> {
  const { conn, options, requested, transport, emit } = run;
  const set = await BackupSet.openOrCreate(options.dest, { name: domain.name, uuid: domain.uuid, xml: summary.xml });
  try {
    if (set.recovery && (set.recovery.removedFiles?.length ?? 0) > 0) {
      emit({ type: 'notice', message: `cleaned up after an interrupted run: removed ${set.recovery.removedFiles.join(', ')}` });
    }
    await deletePendingCheckpoints(set, domain, (message) => emit({ type: 'notice', message }));
    const plan = await planLevel(set, requested, domain, selection.disks, emit, options.signal, offline === null ? {} : { offlineImages: offline });
    if (offline !== null)
      emit({ type: 'notice', message: `domain ${domain.name} is shut off: its images are read with qemu-nbd, read-only; none of its code runs` });
    return await executeOrFallBackToFull(
      {
        conn,
        domain,
        summary,
        set,
        plan,
        selection: selection.disks,
        transport,
        signal: options.signal,
        emit,
        started: run.started,
        notices: run.notices,
        concurrency: options.concurrency ?? 2,
        compression: options.compress ?? null,
        runDir,
        domainLock,
        scratchDir: run.scratchDir,
        hooks: options.hooks ?? {},
        remote,
        offline,
        quiesce: run.quiesce,
      },
      requested,
    );
  } finally {
    await set.close();
  }
}

/** Some broken bitmaps only show when QEMU is asked to use them: an auto run then takes a full. */
async function executeOrFallBackToFull(context: ExecuteContext, requested: RequestedLevel): Promise<BackupResult> {
  try {
    return await execute(context);
  } catch (error) {
    if (!(error instanceof ChainBrokenError)) throw error;
    if (requested !== 'auto') {
      const what = context.plan.level === 'inc' ? 'an incremental' : 'a differential';
      throw new BackupError('CHAIN_UNUSABLE', `cannot take ${what} backup: ${error.message}`, { cause: error.cause });
    }
    context.emit({ type: 'notice', message: `taking a full backup: ${error.message}` });
    return execute({ ...context, plan: { level: 'full', parent: null, reason: error.message } });
  }
}

/** Whether `dest` holds a set already (its manifest). */
export async function setExists(dest: string): Promise<boolean> {
  return stat(join(resolve(dest), 'manifest.json')).then(
    () => true,
    () => false,
  );
}

/** An incremental or differential needs a set to start from; refused before anything is created. */
async function assertSetExists(dest: string, level: 'inc' | 'diff'): Promise<void> {
  if (await setExists(dest)) return;
  throw new BackupError(
    'CHAIN_UNUSABLE',
    `cannot take ${level === 'inc' ? 'an incremental' : 'a differential'} backup: ${resolve(dest)} holds no backup set yet; take a full (or auto) backup first`,
  );
}

async function checkScratchDir(dir: string, transport: 'pull' | 'push'): Promise<string> {
  if (typeof dir !== 'string' || dir === '') throw new BackupError('INVALID_ARGUMENT', 'scratchDir must be a directory path');
  if (transport === 'push')
    throw new BackupError('INVALID_ARGUMENT', 'scratchDir: push backups use no scratch file (libvirt writes the backup files directly)');
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
