export { BackupSetError, isBackupSetError, type BackupSetErrorCode } from './errors.js';
export {
  MANIFEST_FILE,
  MANIFEST_FORMAT,
  MANIFEST_VERSION,
  backupFileName,
  parseManifest,
  serializeManifest,
  type BackupLevel,
  type BackupRecord,
  type BackupTransport,
  type DiskCompression,
  type DiskRecord,
  type DomainIdentity,
  type Manifest,
  type ManifestDomain,
} from './set/manifest.js';
export { writeFileAtomic, type AtomicWriteOptions } from './set/atomic-file.js';
export { checksumFile, createChecksum, DEFAULT_CHECKSUM_ALGORITHM, type Checksum, type ChecksumAlgorithm, type ChecksumOptions } from './checksum.js';
export { BackupSet, type ChainLink, type CommitOptions } from './set/backup-set.js';
export { LOCK_FILE } from './set/set-lock.js';
export { JOURNAL_FILE, BackupRun, type RunJournalState } from './set/run-journal.js';
export type { RecoveryReport } from './set/recovery.js';
export { PENDING_CHECKPOINTS_FILE, addPendingCheckpoint, readPendingCheckpoints, type PendingCheckpoint } from './set/pending-checkpoints.js';
export { deletePendingCheckpoints } from './engine/leftover-checkpoints.js';
export * as qemuImg from './qcow2/qemu-img.js';
export type { ImageInfo, CheckResult, MapExtent } from './qcow2/qemu-img.js';
export { restore, type RestoreOptions, type RestoreResult, type RestoredDisk } from './restore/restore.js';
export { verify, type VerifyOptions, type VerifyReport, type VerifyProblem, type VerifyProblemKind, type VerifiedFile } from './restore/verify.js';
export { listBackups, formatListTable, formatListJson, type ListResult, type ListRow, type ListDisk } from './restore/list.js';
export { formatBytes } from '../common/format-bytes.js';
export { prune, planPrune, type PruneOptions, type PruneResult, type PruneHooks, type PruneProgress, type PrunePlan } from './set/prune.js';
export { runBackup, CHECKPOINT_PREFIX } from './engine/engine.js';
export { estimateBackup, type BackupEstimate, type DiskEstimate, type EstimateBasis } from './engine/estimate.js';
export { SET_USERS_DIR, findSetUsers, readSetUsers, type SetUser, type SetUserCheck, type SetUserFinding, type SetUserState } from './set/set-users.js';
export { RecoveryError, isRecoveryError, type RecoveryErrorCode } from './recovery/recovery-errors.js';
export { DEFAULT_OVERLAY_DIR, runFromBackup, type RunFromBackupEvent, type RunFromBackupOptions, type RunFromBackupResult } from './recovery/run-point.js';
export {
  migrateStorage,
  type MigratedDisk,
  type MigrateStorageEvent,
  type MigrateStorageOptions,
  type MigrateStorageResult,
} from './recovery/migrate-storage.js';
export { libvirtSetUserCheck, type LibvirtSetUserCheck } from './recovery/set-user-check.js';
export { exportPoint, type ExportPointOptions, type PointExport } from './recovery/export-point.js';
export {
  BackupError,
  type BackupErrorCode,
  type BackupEvent,
  type BackupOptions,
  type BackupResult,
  type FreezeTiming,
  type QuiesceMode,
  type RemoteOptions,
  type RequestedLevel,
} from './engine/engine-types.js';
export {
  restoreToPool,
  restoredVolumeName,
  type DefinedDomain,
  type PoolRestoreOptions,
  type PoolRestoreResult,
  type PoolRestoredDisk,
} from './pool-restore/pool-restore.js';
