export { connect, Connection } from './libvirt/connection.js';
export type { ConnectOptions, DomainCapabilitiesQuery } from './libvirt/connection.js';
export type { BackupSupport } from './libvirt/connection.js';
export { Domain } from './libvirt/domain.js';
export type { DomainStateInfo, GuestFileSystem, QemuMonitorCommandOptions, WaitForJobOptions } from './libvirt/domain.js';
export { Checkpoint } from './libvirt/checkpoint.js';
export { StoragePool } from './libvirt/storage-pool.js';
export type { StoragePoolInfo } from './libvirt/storage-pool.js';
export { StorageVolume } from './libvirt/storage-volume.js';
export type { StorageVolumeInfo } from './libvirt/storage-volume.js';
export { Stream } from './libvirt/stream.js';
export type { StreamReceived } from './libvirt/stream.js';
export type { DownloadOptions, UploadOptions, UploadResult, VolumeChunk, VolumeTransferRange } from './libvirt/volume-transfer.js';
export { JobFailedError } from './libvirt/jobs.js';
export { BlockJobError } from './libvirt/block-jobs.js';
export type { BlockCopyOptions, BlockJobInfo, WaitForBlockJobOptions } from './libvirt/block-jobs.js';
export type { JobInfo, JobStats, TypedParameters, TypedParameterValue } from './libvirt/jobs.js';
export type { BlockJobPayload, ConnectionEventMap, ConnectionEventName, ConnectionEvents, EventKind, LifecyclePayload } from './libvirt/events.js';
export type { WaitForOptions, WaitResult } from './libvirt/wait-for-event.js';
export { LibvirtError } from './libvirt/errors.js';
export { LibvirtConnectError } from './libvirt/connect-errors.js';
export type { ConnectFailureReason } from './libvirt/connect-errors.js';
export type { ConnectAuth, CredentialAnswers, CredentialCallback, CredentialRequest, UsernamePassword } from './libvirt/connect-auth.js';
export type { LibvirtErrorInfo } from './libvirt/errors.js';
export * from './libvirt/constants.js';
export { decodeVersion, formatVersion } from './libvirt/version.js';
export { configureCalls, getCallTuning } from './libvirt/call-tuning.js';
export { DEFAULT_EXIT_GRACE_MS, exitProcess } from './libvirt/exit-process.js';
export type { ExitProcessOptions } from './libvirt/exit-process.js';
export { tlsRelay } from './backup/engine/tls-relay.js';
export type { CallTuning } from './libvirt/call-tuning.js';
export type { VersionParts } from './libvirt/version.js';

import { nativeAddon } from './libvirt/native.js';

/** The version of the libvirt library loaded in this process (no daemon involved). */
export function getLibraryVersion(): number {
  return nativeAddon().getLibraryVersion();
}
