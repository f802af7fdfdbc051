import { JobOperation, JobType } from './constants.js';
import type { NativeJobInfo, TypedParameters } from './native.js';

export type { TypedParameters, TypedParameterValue } from './native.js';

/** `virDomainGetJobInfo`, with the job type as an enum. */
export interface JobInfo extends Omit<NativeJobInfo, 'type'> {
  type: JobType;
}

/**
 * Job statistics (`virDomainGetJobStats`, and the `job-completed` event's payload).
 * The well-known fields are typed; `params` keeps every typed parameter libvirt
 * sent, under libvirt's own names, including ones this version does not know.
 */
export interface JobStats {
  /** Absent in event payloads, which carry no job type. */
  type?: JobType;
  operation?: JobOperation;
  timeElapsed?: number;
  timeRemaining?: number;
  dataTotal?: number;
  dataProcessed?: number;
  dataRemaining?: number;
  diskTotal?: number;
  diskProcessed?: number;
  diskRemaining?: number;
  diskTempUsed?: number;
  diskTempTotal?: number;
  /** Set once the job has ended (libvirt >= 6.3). */
  success?: boolean;
  /** libvirt's error message for a failed job. */
  errmsg?: string;
  params: TypedParameters;
}

const NUMERIC_FIELDS: Array<[keyof JobStats, string]> = [
  ['timeElapsed', 'time_elapsed'],
  ['timeRemaining', 'time_remaining'],
  ['dataTotal', 'data_total'],
  ['dataProcessed', 'data_processed'],
  ['dataRemaining', 'data_remaining'],
  ['diskTotal', 'disk_total'],
  ['diskProcessed', 'disk_processed'],
  ['diskRemaining', 'disk_remaining'],
  ['diskTempUsed', 'disk_temp_used'],
  ['diskTempTotal', 'disk_temp_total'],
];

export function toJobStats(params: TypedParameters, type?: number): JobStats {
  const stats: JobStats = { params };
  if (type !== undefined) stats.type = type as JobType;
  const operation = params.operation;
  if (typeof operation === 'number') stats.operation = operation as JobOperation;
  for (const [key, field] of NUMERIC_FIELDS) {
    const value = params[field];
    if (typeof value === 'number') (stats[key] as number) = value;
    else if (typeof value === 'bigint') (stats[key] as number) = Number(value);
  }
  if (typeof params.success === 'boolean') stats.success = params.success;
  if (typeof params.errmsg === 'string') stats.errmsg = params.errmsg;
  return stats;
}

/** A job that ended without success (failed, or aborted); carries its final stats. */
export class JobFailedError extends Error {
  readonly stats: JobStats;

  constructor(domainName: string, stats: JobStats) {
    const operation = stats.operation !== undefined ? (JobOperation[stats.operation] ?? String(stats.operation)).toLowerCase() : 'job';
    const cancelled = stats.type === JobType.CANCELLED;
    super(
      stats.errmsg !== undefined && stats.errmsg !== ''
        ? `${operation} job on domain ${domainName} failed: ${stats.errmsg}`
        : `${operation} job on domain ${domainName} ${cancelled ? 'was cancelled' : 'did not succeed'}`,
    );
    this.name = 'JobFailedError';
    this.stats = stats;
  }
}
