export { connect, Connection } from './connection.js';
export type { ConnectOptions, DomainCapabilitiesQuery } from './connection.js';
export type { BackupSupport } from './connection.js';
export { Domain } from './domain.js';
export type { DomainStateInfo, QemuMonitorCommandOptions, WaitForJobOptions } from './domain.js';
export { Checkpoint } from './checkpoint.js';
export { JobFailedError } from './jobs.js';
export type { JobInfo, JobStats, TypedParameters, TypedParameterValue } from './jobs.js';
export type { BlockJobPayload, ConnectionEventMap, ConnectionEventName, ConnectionEvents, EventKind, LifecyclePayload } from './events.js';
export { LibvirtError } from './errors.js';
export type { LibvirtErrorInfo } from './errors.js';
export * from './constants.js';
export { decodeVersion, formatVersion } from './version.js';
export { configureCalls, getCallTuning } from './call-tuning.js';
export type { CallTuning } from './call-tuning.js';
export type { VersionParts } from './version.js';

import { nativeAddon } from './native.js';

/** The version of the libvirt library loaded in this process (no daemon involved). */
export function getLibraryVersion(): number {
  return nativeAddon().getLibraryVersion();
}
