import type { AtomicWriteOptions } from './atomic-file.js';
import type { BackupRecord, DiskRecord, Manifest } from './manifest.js';

/** One file of a disk's chain, oldest first. */
export interface ChainLink {
  backupId: string;
  disk: DiskRecord;
  /** Absolute path of `disk.file`. */
  path: string;
}

/**
 * What recovery and prune's switching steps need from an open set: its files and its
 * manifest. `BackupSet` implements it; depending on this rather than on the class keeps the
 * set's opening (which runs recovery) and recovery (which may finish a prune) apart.
 */
export interface SetFiles {
  readonly dir: string;
  readonly manifest: Readonly<Manifest>;
  readonly backups: readonly BackupRecord[];
  pathOf(file: string): string;
  referencedFiles(): Set<string>;
  writeManifest(next: Manifest, options?: AtomicWriteOptions): Promise<void>;
}
