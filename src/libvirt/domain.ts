import { setTimeout as delay } from 'node:timers/promises';

import { Checkpoint } from './checkpoint.js';
import {
  blockCopyFlags,
  blockCopyParams,
  getBlockJobInfo,
  waitForBlockJobReady,
  type BlockCopyOptions,
  type BlockJobInfo,
  type WaitForBlockJobOptions,
} from './block-jobs.js';
import type { Connection } from './connection.js';
import { CheckpointCreateFlags, type DomainState, JobStatsFlags, JobType, QemuMonitorCommandFlags } from './constants.js';
import { LibvirtError } from './errors.js';
import { JobFailedError, toJobStats, type JobInfo, type JobStats } from './jobs.js';
import type { NativeDomain } from './native.js';
import {
  buildBackupXml,
  buildBlockCopyDestinationXml,
  buildCheckpointXml,
  parseBackupXml,
  parseDomainXml,
  type BackupSpec,
  type BlockCopyDestination,
  type CheckpointSpec,
} from '../xml/index.js';

/** Options of `Domain.waitForJob()`. */
export interface WaitForJobOptions {
  /** Stop waiting (the job itself goes on; call `abortJob()` to end it). */
  signal?: AbortSignal;
  /** Reject with a `TimeoutError` after this long (the job goes on). */
  timeoutMs?: number;
  /** How often the job's state is asked in case its event never comes. Default 5000. */
  recheckMs?: number;
}

const JOB_RECHECK_MS = 5_000;

/** A domain's state and the reason for it. */
export interface DomainStateInfo {
  state: DomainState;
  /** One of the `Domain*Reason` enums matching `state`. */
  reason: number;
}

/** Options of `Domain.qemuMonitorCommand()`. */
export interface QemuMonitorCommandOptions {
  /** Send a human monitor (HMP) command instead of QMP JSON. */
  hmp?: boolean;
  /** Raw `QemuMonitorCommandFlags`. */
  flags?: number;
}

/** A file system mounted in the guest, as the guest agent reports it (`Domain.getFSInfo()`). */
export interface GuestFileSystem {
  /** Where the guest mounted it (`/`, `/var`). */
  mountpoint: string;
  /** The guest's name for its device (`vda1`). */
  name: string;
  /** `ext4`, `xfs`, ... */
  fstype: string;
  /** The domain's disk targets (`vda`) under it, when the agent could tell. */
  devAliases: string[];
}

/** A libvirt domain (virtual machine), obtained from a `Connection`. */
export class Domain {
  readonly connection: Connection;
  readonly #native: NativeDomain;

  /** @internal Domains come from a Connection. */
  constructor(connection: Connection, native: NativeDomain) {
    this.connection = connection;
    this.#native = native;
  }

  /** The domain's name (known locally, no daemon round trip). */
  get name(): string {
    return this.#native.getName();
  }

  /** The domain's UUID as a string (known locally). */
  get uuid(): string {
    return this.#native.getUUIDString();
  }

  /**
   * The hypervisor ID the domain had when this handle was looked up, `null` if it was shut
   * off then: libvirt keeps the ID in the handle and does not ask the daemon again. A
   * domain stopped and started since runs under a new ID, which a fresh lookup returns.
   */
  async getId(): Promise<number | null> {
    return this.#native.getId();
  }

  /** The domain XML; `DomainXMLFlags` select inactive/secure/migratable forms. */
  async getXMLDesc(flags = 0): Promise<string> {
    return this.#native.getXMLDesc(flags);
  }

  /** The domain's state and the reason for it (virDomainGetState). */
  async getState(): Promise<DomainStateInfo> {
    const { state, reason } = await this.#native.getState();
    return { state: state as DomainState, reason };
  }

  /** Whether the domain is running (virDomainIsActive). */
  async isActive(): Promise<boolean> {
    return this.#native.isActive();
  }

  /** Whether the domain has a persistent definition (virDomainIsPersistent). */
  async isPersistent(): Promise<boolean> {
    return this.#native.isPersistent();
  }

  /** Starts a defined domain (`virDomainCreateWithFlags`). */
  async start(flags = 0): Promise<void> {
    return this.#native.start(flags);
  }

  /** Asks the guest to shut down; returns before it has. */
  async shutdown(flags = 0): Promise<void> {
    return this.#native.shutdown(flags);
  }

  /** Stops the domain at once, like pulling the plug. */
  async destroy(flags = 0): Promise<void> {
    return this.#native.destroy(flags);
  }

  /** Removes a persistent domain's definition (`UndefineFlags`). */
  async undefine(flags = 0): Promise<void> {
    return this.#native.undefine(flags);
  }

  /**
   * Sends a command straight to QEMU's monitor (libvirt-qemu). Unsupported by
   * libvirt's policy: meant for tests and debugging, e.g. `qemu-io` writes.
   */
  async qemuMonitorCommand(command: string, options: QemuMonitorCommandOptions = {}): Promise<string> {
    const flags = (options.flags ?? 0) | (options.hmp === true ? QemuMonitorCommandFlags.HMP : 0);
    return this.#native.qemuMonitorCommand(command, flags);
  }

  /**
   * Creates a checkpoint from XML or from a typed spec (validated and built by
   * `libvirt-backup/xml` for the daemon's libvirt version). Flags:
   * `CheckpointCreateFlags.REDEFINE`, `QUIESCE`, `REDEFINE_VALIDATE`.
   */
  async createCheckpoint(checkpoint: string | CheckpointSpec, flags = 0): Promise<Checkpoint> {
    const xml = await this.#checkpointXml(checkpoint, (flags & CheckpointCreateFlags.REDEFINE) !== 0);
    return new Checkpoint(this, await this.#native.createCheckpoint(xml, flags));
  }

  /** `CheckpointListFlags.ROOTS`, `TOPOLOGICAL`, `LEAVES`, `NO_LEAVES`. */
  async listAllCheckpoints(flags = 0): Promise<Checkpoint[]> {
    const list = await this.#native.listAllCheckpoints(flags);
    return list.map((native) => new Checkpoint(this, native));
  }

  /** Rejects with `VIR_ERR_NO_DOMAIN_CHECKPOINT` when there is none. */
  async lookupCheckpointByName(name: string): Promise<Checkpoint> {
    return new Checkpoint(this, await this.#native.lookupCheckpointByName(name));
  }

  /**
   * Starts a push or pull backup job; with `checkpoint`, libvirt creates that
   * checkpoint atomically with the start of the backup. Both accept XML or typed
   * specs. Flags: `BackupBeginFlags.REUSE_EXTERNAL`.
   */
  async backupBegin(backup: string | BackupSpec, checkpoint?: string | CheckpointSpec | null, flags = 0): Promise<void> {
    const backupXml = typeof backup === 'string' ? backup : buildBackupXml(backup, { libvirtVersion: await this.connection.getLibVersion() });
    const checkpointXml = checkpoint === undefined || checkpoint === null ? null : await this.#checkpointXml(checkpoint, false);
    return this.#native.backupBegin(backupXml, checkpointXml, flags);
  }

  /** The running backup job's XML, with what libvirt filled in (export names, scratch files). */
  async backupGetXMLDesc(flags = 0): Promise<string> {
    return this.#native.backupGetXMLDesc(flags);
  }

  /** `backupGetXMLDesc()` parsed into a typed spec. */
  async backupGetSpec(): Promise<BackupSpec> {
    return parseBackupXml(await this.#native.backupGetXMLDesc(0));
  }

  /** Aborts the running job; this is also how a pull backup is ended. */
  async abortJob(): Promise<void> {
    return this.#native.abortJob();
  }

  /** The domain's current job, if any (virDomainGetJobInfo). */
  async getJobInfo(): Promise<JobInfo> {
    const info = await this.#native.getJobInfo();
    return { ...info, type: info.type as JobType };
  }

  /** Current job statistics, or the last completed job's (`JobStatsFlags.COMPLETED`, `KEEP_COMPLETED`). */
  async getJobStats(flags = 0): Promise<JobStats> {
    const { type, params } = await this.#native.getJobStats(flags);
    return toJobStats(params, type);
  }

  /**
   * Starts copying `disk` (target `vda` or source path) to `destination` while the
   * guest runs (`virDomainBlockCopy`). The copy mirrors every guest write once it is
   * ready (`waitForBlockJobReady()`); `blockJobAbort(disk, BlockJobAbortFlags.PIVOT)`
   * then switches the disk over to the copy, a plain `blockJobAbort(disk)` drops it.
   * `destination` is a `<disk>` XML string or a typed destination.
   */
  async blockCopy(disk: string, destination: string | BlockCopyDestination, options: BlockCopyOptions = {}): Promise<void> {
    const xml = typeof destination === 'string' ? destination : buildBlockCopyDestinationXml(destination);
    return this.#native.blockCopy(disk, xml, blockCopyParams(options), blockCopyFlags(options));
  }

  /** Ends `disk`'s block job: `BlockJobAbortFlags.PIVOT` switches a ready copy over, `ASYNC` returns before it has ended. */
  async blockJobAbort(disk: string, flags = 0): Promise<void> {
    return this.#native.blockJobAbort(disk, flags);
  }

  /** `disk`'s block job, or null when it has none. `BlockJobInfoFlags.BANDWIDTH_BYTES`: bandwidth in bytes/s. */
  async getBlockJobInfo(disk: string, flags = 0): Promise<BlockJobInfo | null> {
    return getBlockJobInfo(this.#native, disk, flags);
  }

  /** Limits `disk`'s block job to `bandwidth` MiB/s (bytes/s with `BlockJobSetSpeedFlags.BANDWIDTH_BYTES`); 0: unlimited. */
  async blockJobSetSpeed(disk: string, bandwidth: number, flags = 0): Promise<void> {
    return this.#native.blockJobSetSpeed(disk, bandwidth, flags);
  }

  /**
   * Freezes the guest's file systems through the QEMU guest agent (`virDomainFSFreeze`):
   * each is synced, then takes no more writes until `fsThaw()`, so that disks copied
   * meanwhile hold consistent file systems. `mountpoints` (as the guest names them)
   * limits it to those (a path that is no mount point is passed over: compare the count);
   * none or an empty list freezes all. Resolves with how many were frozen. Rejects with a
   * `LibvirtError` when the domain has no agent channel (`VIR_ERR_ARGUMENT_UNSUPPORTED`)
   * or its agent does not answer (`VIR_ERR_AGENT_UNRESPONSIVE`). A frozen guest stays
   * frozen until thawed, whatever happens to the caller.
   */
  async fsFreeze(mountpoints: readonly string[] = [], flags = 0): Promise<number> {
    return this.#native.fsFreeze(mountpoints.length === 0 ? null : mountpoints, flags);
  }

  /**
   * Thaws what `fsFreeze()` froze (`virDomainFSThaw`); resolves with how many file systems.
   * Thawing a guest that is not frozen thaws none. libvirt's QEMU driver thaws every file
   * system and refuses a `mountpoints` list (`VIR_ERR_ARGUMENT_UNSUPPORTED`); other drivers may take one.
   */
  async fsThaw(mountpoints: readonly string[] = [], flags = 0): Promise<number> {
    return this.#native.fsThaw(mountpoints.length === 0 ? null : mountpoints, flags);
  }

  /** The file systems the guest has mounted, through its agent (`virDomainGetFSInfo`). */
  async getFSInfo(flags = 0): Promise<GuestFileSystem[]> {
    return this.#native.getFSInfo(flags);
  }

  /**
   * Resolves once `disk`'s copy is ready to pivot (libvirt's `READY` block-job event,
   * or a check of the job every `recheckMs` in case the event is lost), with the job's
   * state when a check saw it (null when the event came first). Rejects with a
   * `BlockJobError` when the job fails, is cancelled or is gone first.
   */
  async waitForBlockJobReady(disk: string, options: WaitForBlockJobOptions = {}): Promise<BlockJobInfo | null> {
    const connection = this.connection;
    return waitForBlockJobReady(
      {
        domainName: this.name,
        domainUuid: this.uuid,
        info: () => this.getBlockJobInfo(disk),
        libvirtHoldsReady: async () => parseDomainXml(await this.getXMLDesc()).disks.some((d) => d.target?.dev === disk && d.mirror?.ready === 'yes'),
        events: connection,
      },
      disk,
      options,
    );
  }

  /**
   * Waits until this domain's current job ends, through the `job-completed`
   * event. Resolves with its final statistics; rejects with a `JobFailedError`
   * carrying libvirt's message when the job failed or was aborted. A job that
   * already ended is answered from its completed stats. Call it after the job
   * started (e.g. after `backupBegin()` resolved).
   *
   * The job's state is also asked every `recheckMs` (default 5 s), so a lost
   * event, a removed or refused registration, or a daemon that stops sending
   * events delays the answer by that much at most, never forever.
   *
   * A pull backup ends by `abortJob()`, which libvirt reports as a success.
   * libvirt releases push-backup targets only after this event: the
   * `block-job` event for each disk tells when a target file is complete.
   */
  async waitForJob(options: WaitForJobOptions = {}): Promise<JobStats> {
    const { signal, timeoutMs, recheckMs = JOB_RECHECK_MS } = options;
    const stats = await this.connection.waitFor('job-completed', {
      match: (domain, completed) => domain.uuid === this.uuid && completed,
      check: () => this.#endedJobStats(),
      recheckMs,
      ...(signal !== undefined ? { signal } : {}),
      ...(timeoutMs !== undefined ? { timeoutMs } : {}),
      description: `the job on domain ${this.name} to end`,
    });
    const failed = stats.success === false || stats.type === JobType.FAILED || stats.type === JobType.CANCELLED;
    if (failed) throw new JobFailedError(this.name, stats);
    return stats;
  }

  /**
   * The last job's final stats once no job runs; `undefined` while one does.
   * A domain that stopped runs no job (libvirt refuses job queries on it but
   * keeps the completed stats). libvirt's job queries fail transiently while a
   * job starts or ends ("backup job data missing"), so a failed query is asked
   * again a few times.
   */
  async #endedJobStats(): Promise<JobStats | undefined> {
    for (let attempt = 1; ; attempt++) {
      try {
        if ((await this.isActive()) && (await this.getJobInfo()).type !== JobType.NONE) return undefined;
        const completed = await this.getJobStats(JobStatsFlags.COMPLETED | JobStatsFlags.KEEP_COMPLETED);
        if (completed.type === JobType.NONE) throw new Error(`no job is running on domain ${this.name}, and none has completed`);
        return completed;
      } catch (error) {
        if (attempt >= 5 || !(error instanceof LibvirtError)) throw error;
        await delay(100 * attempt);
      }
    }
  }

  /** A typed spec is validated for what the XML is for: a redefinition, or a new checkpoint. */
  async #checkpointXml(checkpoint: string | CheckpointSpec, redefine: boolean): Promise<string> {
    if (typeof checkpoint === 'string') return checkpoint;
    return buildCheckpointXml(checkpoint, { libvirtVersion: await this.connection.getLibVersion(), redefine });
  }
}
