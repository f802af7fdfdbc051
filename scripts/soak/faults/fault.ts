// What a kind of fault is to the faults suite: how it is planned from the run's
// random stream, how it strikes a running backup, how the environment is put back
// afterwards, and what the command owes right after it.
import type { BackupTransport } from '../../../src/backup/index.js';
import type { CliEnvironment, CliOutcome, CliProcess } from '../cli-process.js';
import type { LoopExt4 } from '../destination-fs.js';
import type { CheckLog } from '../invariants.js';
import type { LibvirtLink } from '../libvirt-link.js';
import type { MirroredDomain } from '../mirrored-domain.js';
import type { PrivateLibvirtd } from '../private-libvirtd.js';
import type { Rng } from '../seeded-random.js';
import type { RunTimings, Trigger } from './trigger.js';

export interface FaultScene {
  domain: MirroredDomain;
  link: LibvirtLink;
  daemon: PrivateLibvirtd;
  destination: LoopExt4;
  setDir: string;
  /** A second set of the same domain, for a concurrent backup. */
  otherSetDir: string;
  cli: CliEnvironment;
  /** The arguments of a backup of the domain into `dest`. */
  backupArgs(dest: string, level: string, transport: BackupTransport): string[];
}

export interface PlannedFault {
  trigger: Trigger;
  /** Which way of causing the fault, when the kind has several. */
  variant: string;
  /** Numbers the variant needs (bytes to leave free...). */
  amount?: number;
  /** The backup level and transport the fault needs, when it needs them (a long push job to strike). */
  level?: 'full';
  transport?: BackupTransport;
  /**
   * The next backup starts at once, without the checks in between: as a supervisor that
   * restarts a killed job would, while what the killed run started may still be running.
   */
  nextAtOnce?: boolean;
}

export interface Injection {
  /** True when the fault struck while the backup was still running. */
  landed: boolean;
  /** What happened, for the report ("libvirtd down for 340 ms"). */
  detail: string;
  /** Other commands the fault started (a concurrent backup), with the set each one wrote to. */
  others?: Array<{ outcome: Promise<CliOutcome>; dest: string }>;
}

/** What the command must have cleaned up by itself when it exited on its own after the fault. */
export interface ImmediateCleanup {
  /** The libvirt job ended and the run's checkpoint deleted. */
  libvirt: boolean;
  /** The run's files removed from the set. */
  files: boolean;
}

export interface FaultKind {
  name: string;
  transports: readonly BackupTransport[];
  immediateCleanup: ImmediateCleanup;
  plan(rng: Rng, timings: RunTimings): PlannedFault;
  describe(planned: PlannedFault): string;
  /** Before the command starts; may return environment variables for the command. */
  prepare?(scene: FaultScene, planned: PlannedFault): Promise<Record<string, string> | void>;
  /** Waits for the trigger and strikes; runs while the command runs. */
  inject(scene: FaultScene, planned: PlannedFault, cli: CliProcess): Promise<Injection>;
  /** After the command ended: the environment as an operator would repair it. Failures to repair go into `log`. */
  repair(scene: FaultScene, planned: PlannedFault, injection: Injection, log: CheckLog): Promise<void>;
  /**
   * Null when the command's exit suits the fault, else what was expected. `setUnchanged`:
   * the set directory holds the same entries and manifest as before the run; `others`:
   * how the commands the fault started ended.
   */
  expectedExit(outcome: CliOutcome, injection: Injection, setUnchanged: boolean, others: readonly CliOutcome[]): string | null;
}

/**
 * A destination that cannot be written is "bad input" (exit 2) by the command's exit
 * codes, which promise that then nothing in the set changed.
 */
export function exitedCleanlyOrRefusedDestination(outcome: CliOutcome, setUnchanged: boolean): string | null {
  if (outcome.code === 2 && outcome.error !== undefined)
    return setUnchanged ? null : 'exit 1: exit 2 promises that nothing in the set changed, and files of the run were left';
  return exitedCleanly(outcome);
}

/** Exits that mean "the command noticed and reported a failure": success or an ordinary failure, not a crash or a usage error. */
export function exitedCleanly(outcome: CliOutcome, allowed: readonly number[] = [0, 1]): string | null {
  if (outcome.hung) return `exit ${allowed.join(' or ')}, not a hang`;
  if (outcome.code === null || !allowed.includes(outcome.code)) return `exit ${allowed.join(' or ')}`;
  if (outcome.code === 0 && outcome.result === undefined) return 'a result line with exit 0';
  if (outcome.code !== 0 && outcome.error === undefined) return `an error line with exit ${outcome.code}`;
  return null;
}
