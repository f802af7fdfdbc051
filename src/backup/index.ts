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
  type DiskRecord,
  type DomainIdentity,
  type Manifest,
  type ManifestDomain,
} from './manifest.js';
export { writeFileAtomic, type AtomicWriteOptions } from './atomic-file.js';
export { checksumFile, createChecksum, DEFAULT_CHECKSUM_ALGORITHM, type Checksum, type ChecksumAlgorithm, type ChecksumOptions } from './checksum.js';
export { BackupSet, type ChainLink, type CommitOptions } from './backup-set.js';
export { LOCK_FILE } from './set-lock.js';
export { JOURNAL_FILE, BackupRun, type RunJournalState } from './run-journal.js';
export type { RecoveryReport } from './recovery.js';
export * as qemuImg from './qemu-img.js';
export type { ImageInfo, CheckResult, MapExtent } from './qemu-img.js';
export { restore, type RestoreOptions, type RestoreResult, type RestoredDisk } from './restore.js';
export { verify, type VerifyOptions, type VerifyReport, type VerifyProblem, type VerifyProblemKind, type VerifiedFile } from './verify.js';
export { listBackups, formatListTable, formatListJson, formatBytes, type ListResult, type ListRow, type ListDisk } from './list.js';
export { prune, planPrune, type PruneOptions, type PruneResult, type PruneHooks, type PruneProgress, type PrunePlan } from './prune.js';
export { runBackup, CHECKPOINT_PREFIX } from './engine.js';
export { BackupError, type BackupErrorCode, type BackupEvent, type BackupOptions, type BackupResult, type RequestedLevel } from './engine-types.js';
