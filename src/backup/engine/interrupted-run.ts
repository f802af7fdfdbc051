// What a run that died left in libvirt and outside its set: its job, socket directory, scratch files and checkpoint.
import { readFile, rm, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

import { type Connection } from '../../libvirt/connection.js';
import { LibvirtError } from '../../libvirt/errors.js';
import { JobType } from '../../libvirt/constants.js';
import type { Domain } from '../../libvirt/domain.js';
import { type BackupSpec } from '../../xml/index.js';
import { type DomainRunRecord } from './domain-lock.js';
import { BackupError, type BackupEvent } from './engine-types.js';
import { errnoCode } from '../../common/fs-errors.js';
import { parseManifest } from '../set/manifest.js';
import { endPushJobLibvirtForgot } from './forgotten-push-job.js';
import { stopDomainLeftPaused } from './paused-start.js';
import { deleteCheckpointIfPresent } from './leftover-checkpoints.js';
import { isSocketDirOfRunDir } from './run-dir.js';
import { serverAddress } from './remote-export.js';
import { readJournal } from '../set/run-journal.js';

/** Socket directories of versions that kept them in the temp directory. */
const LEGACY_SOCKET_DIR_PREFIX = 'lvb-backup-';

/** How long a leftover job may take to end once aborted. */
const LEFTOVER_JOB_END_MS = 120_000;

/**
 * A backup job libvirt-backup started that is still running belongs to a run that died
 * (the caller holds the domain lock): it is ended, and waited for, so that its files can
 * be removed safely. Any other job on the domain is someone else's and is left alone.
 */
export async function endLeftoverJob(
  conn: Connection,
  domain: Domain,
  runDir: string,
  emit: (event: BackupEvent) => void,
  interrupted: DomainRunRecord | null = null,
): Promise<void> {
  // A shut-off domain has no QEMU, so no job of any run.
  if (!(await domain.isActive())) return;
  const job = await jobInfoUnlessUndescribable(domain);
  if (job === 'undescribable') {
    // Whatever the job was, it is not one libvirt can end: QEMU's side of ours is ended.
    await endPushJobLibvirtForgot(domain, interrupted, emit);
    await awaitJobLibvirtCannotDescribe(domain);
    return;
  }
  if (job.type === JobType.NONE) {
    await endPushJobLibvirtForgot(domain, interrupted, emit);
    return;
  }
  let spec: BackupSpec | undefined;
  try {
    spec = await domain.backupGetSpec();
  } catch {
    spec = undefined;
  }
  const described = spec === undefined ? undefined : await describeOurJob(spec, runDir, interrupted);
  if (described === undefined) {
    if (spec === undefined && interrupted?.transport === 'push') {
      await endPushJobLibvirtForgot(domain, interrupted, emit);
      await awaitJobLibvirtCannotDescribe(domain);
      return;
    }
    throw new BackupError(
      'DOMAIN_BUSY',
      `domain ${domain.name} already has a job running (${JobType[job.type] ?? job.type}) that libvirt-backup did not start; wait for it or abort it`,
    );
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

/**
 * libvirt 9.0 restarted during a push backup may also keep a job it can no longer
 * describe ("backup job data missing"), which neither a query nor an abort through
 * libvirt ends; once QEMU's part of it is gone, libvirt may let it go by itself.
 * A restart of libvirtd usually drops it; but when the domain's saved state names the
 * job without its description, libvirt recovers the same job at every start, and it
 * ends only with the domain's QEMU process. The message says both, in that order.
 */
async function awaitJobLibvirtCannotDescribe(domain: Domain): Promise<void> {
  await domain.abortJob().catch(() => undefined);
  await domain.waitForJob({ timeoutMs: 10_000 }).catch(() => undefined);
  const job = await jobInfoUnlessUndescribable(domain).catch(() => 'undescribable' as const);
  if (job !== 'undescribable' && job.type === JobType.NONE) return;
  throw new BackupError(
    'DOMAIN_BUSY',
    `libvirt still reports a backup job on domain ${domain.name} that it can no longer describe or abort (libvirtd was restarted while an interrupted push backup ran; ` +
      `QEMU's part of it has been ended): restart libvirtd once more, which usually clears it, then run the backup again; ` +
      `if it is still there after that restart, libvirt recovers it from the domain's saved state at every start, and it ends only ` +
      `when the domain stops: stop the domain, restart libvirtd, start the domain, then run the backup again`,
  );
}

/** How often, and how far apart, a job query that fails with "backup job data missing" is asked again before the job is taken as one libvirt lost. */
const UNDESCRIBABLE_ATTEMPTS = 6;
const UNDESCRIBABLE_RETRY_MS = 400;

/** libvirt answers "backup job data missing" for a moment while a job starts or ends, and for good after it lost a job in a restart. */
async function jobInfoUnlessUndescribable(domain: Domain): Promise<Awaited<ReturnType<Domain['getJobInfo']>> | 'undescribable'> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await domain.getJobInfo();
    } catch (error) {
      if (!(error instanceof LibvirtError) || !/backup job data missing/.test(error.message)) throw error;
      if (attempt >= UNDESCRIBABLE_ATTEMPTS) return 'undescribable';
      await new Promise((resolveSleep) => setTimeout(resolveSleep, UNDESCRIBABLE_RETRY_MS));
    }
  }
}

/** What a running backup job of ours is, or undefined when it is not ours. */
async function describeOurJob(spec: BackupSpec, runDir: string, interrupted: DomainRunRecord | null): Promise<string | undefined> {
  if (spec.mode === 'pull' && spec.server.transport !== 'unix') {
    // A remote hypervisor's job listens on TCP: ours when the run that died recorded that server.
    if (spec.server.transport === 'fd' || interrupted?.nbdServer === undefined) return undefined;
    const address = serverAddress(spec.server);
    return interrupted.nbdServer === address ? `pull backup job (NBD server ${address})` : undefined;
  }
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
export async function cleanUpAfterInterruptedRun(domain: Domain, interrupted: DomainRunRecord | null, emit: (event: BackupEvent) => void): Promise<void> {
  if (interrupted === null) return;
  await stopDomainLeftPaused(domain, interrupted, emit);
  if (interrupted.socketDir !== undefined) await rm(interrupted.socketDir, { recursive: true, force: true });
  for (const file of interrupted.scratchFiles ?? []) {
    await unlink(file).then(
      () => emit({ type: 'notice', message: `removed the scratch file ${file} of an interrupted run` }),
      (error: unknown) => {
        if (errnoCode(error) !== 'ENOENT')
          emit({ type: 'notice', message: `could not remove the scratch file ${file} of an interrupted run: ${String(error)}` });
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
