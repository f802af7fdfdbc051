/**
 * Typed libvirt XML for checkpoints, backups and domain disks: builders that
 * validate before anything reaches libvirt, and parsers that keep what they
 * do not model. Pure TypeScript; loads no native code.
 */
export { XmlParseError, XmlValidationError, type ValidationIssue } from './errors.js';
export type { XmlExtra } from './node.js';
export { DEFAULT_LIBVIRT_VERSION, NEWEST_MODELED_LIBVIRT_VERSION, type LibvirtVersionOptions } from './validate.js';
export {
  buildCheckpointXml,
  checkpointDisksFor,
  checkpointSpecIssues,
  parseCheckpointXml,
  validateCheckpointSpec,
  type CheckpointBitmapDisk,
  type CheckpointBuildOptions,
  type CheckpointDisk,
  type CheckpointExcludedDisk,
  type CheckpointSpec,
} from './checkpoint.js';
export {
  backupSpecIssues,
  buildBackupXml,
  parseBackupXml,
  validateBackupSpec,
  type BackupDiskMode,
  type BackupDiskType,
  type BackupDriver,
  type BackupEncryption,
  type BackupServer,
  type BackupSpec,
  type BackupStorage,
  type BuildBackupOptions,
  type EncryptionCipher,
  type EncryptionIvgen,
  type EncryptionSecret,
  type FdBackupServer,
  type PullBackupDisk,
  type PullBackupSpec,
  type PushBackupDisk,
  type PushBackupSpec,
  type Seclabel,
  type TcpBackupServer,
  type UnixBackupServer,
  type YesNo,
} from './backup.js';
export {
  classifyCheckpointDisks,
  diskBitmapSupport,
  parseDomainXml,
  type BitmapSupport,
  type BitmapSupportOptions,
  type CheckpointDiskClassification,
  type DomainBackingStore,
  type DomainDisk,
  type DomainDiskHost,
  type DomainDiskSource,
  type DomainSummary,
} from './domain.js';
export { parseDomainCapabilities, type DomainCapabilitiesSummary } from './capabilities.js';
export {
  RECOVERY_METADATA_NAMESPACE,
  parseDomainAccess,
  parseRecoveryOrigin,
  recoveredDomainXml,
  type DomainAccess,
  type RecoveredDiskFile,
  type RecoveredDomainOptions,
  type RecoveredDomainXml,
  type RecoveryOrigin,
} from './domain-recovery.js';
export {
  blockCopyDestinationIssues,
  buildBlockCopyDestinationXml,
  type BlockCopyBlockDestination,
  type BlockCopyDestination,
  type BlockCopyFileDestination,
  type BlockCopyVolumeDestination,
} from './block-copy.js';
export { buildStoragePoolXml, buildStorageVolumeXml, type DirStoragePoolSpec, type StorageVolumeSpec } from './storage.js';
export { restoredDomainXml, type RestoredDiskVolume, type RestoredDomainOptions, type RestoredDomainXml } from './domain-restore.js';
