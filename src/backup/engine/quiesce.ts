// Guest-consistent backups: the guest's file systems are frozen through its agent for the
// moment libvirt starts the job (the point in time the backup holds), and thawed right after.
import type { Domain } from '../../libvirt/domain.js';
import { LibvirtError } from '../../libvirt/errors.js';
import type { DomainLock } from './domain-lock.js';
import { BackupError, type BackupEvent, type BackupOptions, type FreezeTiming, type QuiesceMode } from './engine-types.js';

/** What a run does about the guest's file systems, decided before it creates anything. */
export interface QuiescePlan {
  mode: QuiesceMode;
  /** Freeze while the job starts; false: the backup is crash-consistent. */
  freeze: boolean;
  /** The mount points to freeze; empty: all. */
  mountpoints: string[];
}

/** How the job's start went for the guest's file systems. */
export interface QuiesceOutcome {
  quiesced: boolean;
  freeze: FreezeTiming | null;
}

/** What freezing needs of the run. */
export interface FreezeContext {
  domain: Domain;
  domainLock: DomainLock;
  quiesce: QuiescePlan;
  emit: (event: BackupEvent) => void;
  hooks: NonNullable<BackupOptions['hooks']>;
}

const NOT_QUIESCED: QuiesceOutcome = { quiesced: false, freeze: null };
const THAW_ATTEMPTS = 3;
const THAW_RETRY_MS = 500;

/**
 * Checks the options and asks the guest agent which file systems it has: an agent that
 * does not answer fails a `yes` run here, before anything is created, and turns a `try`
 * run crash-consistent with a notice.
 */
export async function planQuiesce(domain: Domain, options: BackupOptions, emit: (event: BackupEvent) => void): Promise<QuiescePlan> {
  const mountpoints = checkMountpoints(options.freezeMountpoints ?? []);
  const mode = options.quiesce ?? (mountpoints.length > 0 ? 'yes' : 'no');
  if (mode !== 'no' && mode !== 'yes' && mode !== 'try') {
    throw new BackupError('INVALID_ARGUMENT', `quiesce must be no, yes or try, got '${String(mode)}'`);
  }
  if (mode === 'no') {
    if (mountpoints.length > 0) throw new BackupError('INVALID_ARGUMENT', "freezeMountpoints: the file systems are only frozen with quiesce 'yes' or 'try'");
    return { mode, freeze: false, mountpoints };
  }
  const unavailable = (why: string): QuiescePlan => {
    if (mode === 'yes') {
      throw new BackupError(
        'QUIESCE_FAILED',
        `cannot quiesce ${domain.name}: ${why}; nothing was backed up (--quiesce=try takes a crash-consistent backup when the guest agent cannot freeze)`,
      );
    }
    emit({ type: 'notice', message: `not quiesced: ${why}; the backup is crash-consistent` });
    return { mode, freeze: false, mountpoints };
  };
  let mounted: string[];
  try {
    mounted = (await domain.getFSInfo()).map((fs) => fs.mountpoint);
  } catch (error) {
    if (!(error instanceof LibvirtError)) throw error;
    return unavailable(`the guest agent of ${domain.name} does not answer (${error.message})`);
  }
  const missing = mountpoints.filter((mountpoint) => !mounted.includes(mountpoint));
  if (missing.length > 0) {
    return unavailable(`${domain.name} has no file system mounted at ${missing.join(', ')} (its agent lists ${mounted.join(', ') || 'none'})`);
  }
  return { mode, freeze: true, mountpoints };
}

function checkMountpoints(mountpoints: readonly string[]): string[] {
  if (!Array.isArray(mountpoints)) throw new BackupError('INVALID_ARGUMENT', 'freezeMountpoints must be an array of absolute paths');
  for (const [index, mountpoint] of mountpoints.entries()) {
    if (typeof mountpoint !== 'string' || !mountpoint.startsWith('/') || mountpoint.includes('\0')) {
      throw new BackupError('INVALID_ARGUMENT', `freezeMountpoints[${index}]: must be an absolute path in the guest, got ${JSON.stringify(mountpoint)}`);
    }
  }
  return [...new Set(mountpoints)];
}

/**
 * Runs `startJob` with the guest's file systems frozen when the plan says so, and thaws
 * them right after, whatever happened. The domain lock records the freeze before it is
 * asked for, so that the next run thaws a guest this run could not (killed meanwhile).
 */
export async function withGuestFrozen(context: FreezeContext, startJob: () => Promise<void>): Promise<QuiesceOutcome> {
  const { domain, domainLock, quiesce, emit, hooks } = context;
  if (!quiesce.freeze) {
    await startJob();
    return NOT_QUIESCED;
  }
  await domainLock.update({ guestFrozen: true });
  const asked = performance.now();
  let fileSystems: number;
  try {
    fileSystems = await domain.fsFreeze(quiesce.mountpoints);
  } catch (error) {
    // The agent thaws what it froze when a freeze fails; a thaw makes sure.
    await thaw(context).catch(() => undefined);
    return crashConsistent(context, `the guest agent could not freeze ${domain.name}'s file systems (${describe(error)})`, startJob, error);
  }
  const frozen = performance.now();
  if (fileSystems === 0 || fileSystems < quiesce.mountpoints.length) {
    await thaw(context).catch(() => undefined);
    return crashConsistent(context, `the guest agent froze ${fileSystems} of ${quiesce.mountpoints.length || 'all'} file systems of ${domain.name}`, startJob);
  }
  let thawAsked: number;
  try {
    await hooks.whileFrozen?.();
    await startJob();
  } finally {
    thawAsked = performance.now();
    await thaw(context);
  }
  const thawMs = performance.now() - thawAsked;
  const freeze: FreezeTiming = { fileSystems, frozenMs: performance.now() - asked, freezeMs: frozen - asked, thawMs };
  emit({
    type: 'notice',
    message: `froze ${fileSystems} file system${fileSystems === 1 ? '' : 's'} of ${domain.name} for ${Math.round(freeze.frozenMs)} ms while the backup job started (freeze ${Math.round(freeze.freezeMs)} ms, thaw ${Math.round(thawMs)} ms)`,
  });
  return { quiesced: true, freeze };
}

/** A freeze that failed: a `yes` run fails (nothing is started yet), a `try` run goes on crash-consistent. */
async function crashConsistent(context: FreezeContext, why: string, startJob: () => Promise<void>, cause?: unknown): Promise<QuiesceOutcome> {
  if (context.quiesce.mode === 'yes') throw new BackupError('QUIESCE_FAILED', `cannot quiesce: ${why}; nothing was backed up`, { cause });
  context.emit({ type: 'notice', message: `not quiesced: ${why}; the backup is crash-consistent` });
  await startJob();
  return NOT_QUIESCED;
}

/**
 * Thaws the guest, asking again if the agent fails: a guest left frozen stops writing. When
 * it cannot be thawed, the domain lock keeps the freeze on record for the next run.
 */
async function thaw(context: FreezeContext): Promise<void> {
  const { domain, domainLock } = context;
  for (let attempt = 1; ; attempt++) {
    try {
      await domain.fsThaw();
      await domainLock.update({ guestFrozen: false });
      return;
    } catch (error) {
      if (attempt < THAW_ATTEMPTS) {
        await new Promise((resolveSleep) => setTimeout(resolveSleep, THAW_RETRY_MS));
        continue;
      }
      domainLock.keepRecordForNextRun();
      throw new BackupError(
        'QUIESCE_FAILED',
        `could not thaw the file systems of ${domain.name} (${describe(error)}): its guest may not write until they are (virsh domfsthaw ${domain.name}); the next backup of it tries again`,
        { cause: error },
      );
    }
  }
}

/** A run that died while the guest was frozen left it so: thawed before anything else is done. */
export async function thawAfterInterruptedRun(
  domain: Domain,
  interrupted: { guestFrozen?: boolean } | null,
  emit: (event: BackupEvent) => void,
): Promise<void> {
  if (interrupted?.guestFrozen !== true) return;
  try {
    const thawed = await domain.fsThaw();
    if (thawed > 0)
      emit({ type: 'notice', message: `thawed ${thawed} file system${thawed === 1 ? '' : 's'} of ${domain.name} that an interrupted run left frozen` });
  } catch (error) {
    emit({
      type: 'notice',
      message: `an interrupted run may have left the file systems of ${domain.name} frozen, and they could not be thawed now (${describe(error)}): if its guest does not write, run virsh domfsthaw ${domain.name}`,
    });
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
