// Block jobs of one disk (copy, commit, pull): their options, their state, and waiting
// for a copy to become ready to pivot. A copy mirrors every guest write once it is
// ready, and stays ready until `blockJobAbort()` pivots to the copy or drops it.
import { BlockCopyFlags, BlockJobStatus, BlockJobType, TypedParameterType } from './constants.js';
import type { NativeDomain } from './native.js';
import { waitForEvent, type EventWaitHost } from './wait-for-event.js';

/** `virDomainGetBlockJobInfo` for a disk that has a job. */
export interface BlockJobInfo {
  type: BlockJobType;
  /** MiB/s, or bytes/s when asked with `BlockJobInfoFlags.BANDWIDTH_BYTES`; 0: unlimited. */
  bandwidth: number;
  /** Progress: `cur` of `end` units. A copy is ready (mirroring) when they are equal. */
  cur: number;
  end: number;
}

/** Options of `Domain.blockCopy()`. */
export interface BlockCopyOptions {
  /** Bytes per second the copy may use (libvirt's `bandwidth`); 0 or absent: unlimited. */
  bandwidth?: number;
  /** Bytes per bit of the dirty bitmap: a power of two from 512 B to 64 MiB. */
  granularity?: number;
  /** Bytes of copy buffer (libvirt's `buf-size`). */
  bufSize?: number;
  /** Copy only the top layer; the destination shares the source's backing chain. */
  shallow?: boolean;
  /** The destination exists already (pre-created with the right size, and backing file when shallow). */
  reuseExternal?: boolean;
  /**
   * The job is not recorded to survive a restart of libvirtd. libvirt 9.0 copies the
   * disks of a persistent domain only with this (else: "domain is not transient").
   */
  transientJob?: boolean;
  /** Raw `BlockCopyFlags`, or-ed with what the options above imply. */
  flags?: number;
}

/** Options of `Domain.waitForBlockJobReady()`. */
export interface WaitForBlockJobOptions {
  /** Stop waiting (the job goes on; `blockJobAbort()` ends it). */
  signal?: AbortSignal;
  /** Reject with an error named `TimeoutError` after this long (the job goes on). */
  timeoutMs?: number;
  /** How often the job's state is asked in case its event is lost. Default 1000. */
  recheckMs?: number;
  /** Called with the job's state at each check. */
  onProgress?: (info: BlockJobInfo) => void;
}

/** A block job that failed, was cancelled, or ended before it was ready. */
export class BlockJobError extends Error {
  override readonly name = 'BlockJobError';

  constructor(
    message: string,
    readonly domainName: string,
    readonly disk: string,
    /** The event's outcome, when libvirt sent one. */
    readonly status: BlockJobStatus | null,
  ) {
    super(message);
  }
}

type TypedValue = { type: TypedParameterType; value: number };

const MAX_GRANULARITY = 64 * 1024 * 1024;

/** libvirt's typed parameters for `virDomainBlockCopy`, after checking each value. */
export function blockCopyParams(options: BlockCopyOptions): Record<string, TypedValue> {
  const params: Record<string, TypedValue> = {};
  const whole = (field: keyof BlockCopyOptions, value: unknown): number => {
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0)
      throw new TypeError(`options.${field} must be a whole number of bytes, got ${String(value)}`);
    return value;
  };
  if (options.bandwidth !== undefined) params['bandwidth'] = { type: TypedParameterType.ULLONG, value: whole('bandwidth', options.bandwidth) };
  if (options.granularity !== undefined) {
    const granularity = whole('granularity', options.granularity);
    if (granularity < 512 || granularity > MAX_GRANULARITY || (granularity & (granularity - 1)) !== 0)
      throw new TypeError(`options.granularity must be a power of two from 512 to ${MAX_GRANULARITY}, got ${granularity}`);
    params['granularity'] = { type: TypedParameterType.UINT, value: granularity };
  }
  if (options.bufSize !== undefined) params['buf-size'] = { type: TypedParameterType.ULLONG, value: whole('bufSize', options.bufSize) };
  return params;
}

export function blockCopyFlags(options: BlockCopyOptions): number {
  return (
    (options.flags ?? 0) |
    (options.shallow === true ? BlockCopyFlags.SHALLOW : 0) |
    (options.reuseExternal === true ? BlockCopyFlags.REUSE_EXT : 0) |
    (options.transientJob === true ? BlockCopyFlags.TRANSIENT_JOB : 0)
  );
}

export async function getBlockJobInfo(native: NativeDomain, disk: string, flags: number): Promise<BlockJobInfo | null> {
  const info = await native.getBlockJobInfo(disk, flags);
  return info === null ? null : { ...info, type: info.type as BlockJobType };
}

/** Copies and active commits wait in a ready state for the pivot; libvirt keeps `cur < end` until then. */
export function isReady(info: BlockJobInfo): boolean {
  return (info.type === BlockJobType.COPY || info.type === BlockJobType.ACTIVE_COMMIT) && info.end > 0 && info.cur === info.end;
}

/** What waiting for a block job needs of its domain and connection. */
export interface BlockJobWaitHost {
  /** The domain's connection, whose events are awaited. */
  events: EventWaitHost;
  domainName: string;
  domainUuid: string;
  info(): Promise<BlockJobInfo | null>;
  /** Whether libvirt itself holds the job ready (the live XML's `<mirror ready='yes'>`). */
  libvirtHoldsReady(): Promise<boolean>;
}

/**
 * Resolves once `disk`'s copy (or active commit) is ready to pivot: on libvirt's
 * `READY` event, or when a check of the job finds it so. Rejects with a
 * `BlockJobError` when the job fails, is cancelled, or is gone before it was ready.
 */
export async function waitForBlockJobReady(host: BlockJobWaitHost, disk: string, options: WaitForBlockJobOptions = {}): Promise<BlockJobInfo | null> {
  const { signal, timeoutMs, recheckMs = 1000, onProgress } = options;
  const failure = (what: string, status: BlockJobStatus | null): BlockJobError =>
    new BlockJobError(`the block job on disk ${disk} of domain ${host.domainName} ${what}`, host.domainName, disk, status);
  const outcome = await waitForEvent<'block-job', { info: BlockJobInfo | null }>(host.events, 'block-job', {
    match: (domain, payload) => {
      if (domain.uuid !== host.domainUuid || payload.disk !== disk) return undefined;
      if (payload.status === BlockJobStatus.READY) return { info: null };
      if (payload.status === BlockJobStatus.FAILED) throw failure('failed', payload.status);
      if (payload.status === BlockJobStatus.CANCELED) throw failure('was cancelled', payload.status);
      throw failure('ended before it was ready to pivot', payload.status);
    },
    // A refused registration is no reason to stop: the checks still see the job.
    check: async () => {
      const info = await host.info();
      if (info === null) throw failure('is gone (it failed or was ended by someone else)', null);
      onProgress?.(info);
      // cur == end follows QEMU's own ready flag, which libvirt reads from QEMU at each
      // query; libvirt allows the pivot only once its event thread has handled QEMU's
      // ready event, a moment later on a busy host ("not ready for pivot yet").
      return isReady(info) && (await host.libvirtHoldsReady()) ? { info } : undefined;
    },
    recheckMs,
    ...(signal !== undefined ? { signal } : {}),
    ...(timeoutMs !== undefined ? { timeoutMs } : {}),
    description: `the block job on disk ${disk} of domain ${host.domainName} to be ready`,
  });
  return outcome.info;
}
