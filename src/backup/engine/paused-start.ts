// A shut-off domain started paused for its backup, and shut off again after it: its guest
// code never runs, and the domain ends as it was found.
import { DomainCreateFlags, DomainState } from '../../libvirt/constants.js';
import type { Domain } from '../../libvirt/domain.js';
import type { DomainLock, DomainRunRecord } from './domain-lock.js';
import type { BackupEvent } from './engine-types.js';

/** Starts the domain paused, recorded first so that the next run stops it if this one dies. */
export async function startPausedForRun(domain: Domain, domainLock: DomainLock, emit: (event: BackupEvent) => void): Promise<void> {
  await domainLock.update({ startedPaused: true });
  await domain.start(DomainCreateFlags.START_PAUSED);
  emit({
    type: 'notice',
    message: `domain ${domain.name} is shut off: started it paused for the backup (its guest code does not run); it is stopped again after`,
  });
}

/** Stops the domain the run started; it never ran guest code, so nothing is lost. */
export async function stopAfterRun(domain: Domain, emit: (event: BackupEvent) => void): Promise<void> {
  try {
    await domain.destroy();
    emit({ type: 'notice', message: `domain ${domain.name} is shut off again` });
  } catch (error) {
    emit({
      type: 'notice',
      message: `could not shut domain ${domain.name} off again: ${(error as Error).message}; it is paused (virsh destroy ${domain.name})`,
    });
  }
}

/** A run that died after starting the domain paused left it so: it is stopped, if it is still paused. */
export async function stopDomainLeftPaused(domain: Domain, interrupted: DomainRunRecord | null, emit: (event: BackupEvent) => void): Promise<void> {
  if (interrupted?.startedPaused !== true) return;
  const { state } = await domain.getState();
  if (state !== DomainState.PAUSED) return;
  await domain.destroy();
  emit({ type: 'notice', message: `shut off domain ${domain.name}, which an interrupted run had started paused` });
}
