// What one backup run knows while it runs: the plan, the domain, the set, and how to report.

import { type Connection } from '../../libvirt/connection.js';
import type { Domain } from '../../libvirt/domain.js';
import { type DomainSummary } from '../../xml/index.js';
import { type BackupSet } from '../set/backup-set.js';
import { type SelectedDisk } from './disk-selection.js';
import { type DomainLock } from './domain-lock.js';
import { type BackupEvent, type BackupOptions } from './engine-types.js';
import { type BackupLevel, type BackupRecord } from '../set/manifest.js';
import { type RemoteExport } from './remote-export.js';
import { type QuiescePlan } from './quiesce.js';
import { type OfflineImage } from './offline-images.js';
import { type ClusterCompression } from '../qcow2/cluster-compression.js';

/** Checkpoints this tool creates start with this; others on the domain are left alone. */
export const CHECKPOINT_PREFIX = 'lvb-';

/** libvirt refused the parent checkpoint when the job started; nothing was created. */
export class ChainBrokenError extends Error {}

export interface LevelPlan {
  level: BackupLevel;
  parent: BackupRecord | null;
  reason: string;
}

export interface DiskPlan extends SelectedDisk {
  level: BackupLevel;
  file: string;
  backingFile: string | null;
  virtualSize: number;
  dataBytes: number;
  /** Set when this run wrote the file itself and hashed it on the way. */
  written?: { fileSize: number; checksum: string; storedBytes: number; compression: ClusterCompression | null };
}

export interface ExecuteContext {
  conn: Connection;
  domain: Domain;
  summary: DomainSummary;
  set: BackupSet;
  plan: LevelPlan;
  selection: SelectedDisk[];
  transport: 'pull' | 'push';
  signal: AbortSignal | undefined;
  emit: (event: BackupEvent) => void;
  started: number;
  notices: string[];
  concurrency: number;
  /** How the pull copy compresses the files' clusters; null: stored plain. */
  compression: ClusterCompression | null;
  runDir: string;
  domainLock: DomainLock;
  /** Where pull scratch files go; null: the set directory. */
  scratchDir: string | null;
  hooks: NonNullable<BackupOptions['hooks']>;
  /** How a pull job is read from a remote hypervisor; null: the hypervisor is this host. */
  remote: RemoteExport | null;
  /** Whether the guest's file systems are frozen while the job starts. */
  quiesce: QuiescePlan;
  /** A shut-off domain's images, read with qemu-nbd instead of a libvirt job; null for a running domain. */
  offline: Map<string, OfflineImage> | null;
}
