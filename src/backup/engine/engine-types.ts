// The contract between the backup engine and its callers (the CLI, services):
// what a run is asked to do, what it reports while it runs, and what it returns.
import type { Connection } from '../../libvirt/connection.js';
import type { BackupLevel, BackupTransport, DiskRecord } from '../set/manifest.js';

/** Whether the guest's file systems are frozen while the job starts: `try` goes on crash-consistent when they cannot be. */
export type QuiesceMode = 'no' | 'yes' | 'try';

/** What the caller asks for; `auto` picks full or incremental by itself. */
export type RequestedLevel = 'auto' | BackupLevel;

/** What `runBackup()` backs up, where to, and how. */
export interface BackupOptions {
  /** Domain name or UUID. */
  domain: string;
  /** The backup set directory for this domain (created on first use). */
  dest: string;
  level?: RequestedLevel;
  /** Default `pull`: data read with our NBD client. `push`: libvirt writes the files. */
  transport?: BackupTransport;
  /** Disk targets to back up (`vda`); default every disk that can be backed up. */
  disks?: string[];
  /** An open connection to use; otherwise `uri` is opened and closed by the run. */
  connection?: Connection;
  uri?: string;
  /** Aborts the libvirt job, removes this run's files; the manifest stays as it was. */
  signal?: AbortSignal;
  /** Called with each step of the run: start, notices, progress per disk, disk done, done. */
  onEvent?: (event: BackupEvent) => void;
  /** Disks copied at once (pull). Default 2. */
  concurrency?: number;
  /**
   * Store the backup's clusters compressed, as qcow2 compressed clusters that qemu-img and
   * QEMU read: `zstd` (the image's compression_type says so) or `zlib`. Pull only.
   */
  compress?: 'zstd' | 'zlib';
  /**
   * Directory for the pull job's scratch files (default: the set directory). While the job
   * runs, QEMU saves there the old content of every cluster the guest overwrites; it may
   * need up to the data the disks hold. The run keeps that much free (see SpaceGuard).
   */
  scratchDir?: string;
  /**
   * Guest-consistent backup: the guest's file systems are frozen through the QEMU guest
   * agent while libvirt starts the job, and thawed right after. `yes` fails the run,
   * before anything is created, when no agent answers; `try` then backs up
   * crash-consistent with a notice. Default `no`, or `yes` with `freezeMountpoints`.
   */
  quiesce?: QuiesceMode;
  /** Guest mount points to freeze (`/`, `/var`) instead of all; each must be mounted. */
  freezeMountpoints?: string[];
  /** Called between steps; tests use them to inject faults at a precise point. */
  hooks?: BackupHooks;
  /**
   * For a remote URI (one with a host, or a tls/tcp/ssh/libssh transport): where the
   * hypervisor's NBD server listens and how it is read. Ignored for local URIs.
   */
  remote?: RemoteOptions;
  /**
   * `dest` is storage the hypervisor sees at the same path (NFS, a cluster file system):
   * only then may a push backup run on a remote URI, since libvirt writes push targets on
   * the hypervisor's own file system.
   */
  destShared?: boolean;
  /**
   * A shut-off domain is read from its image files with qemu-nbd, read-only, running none
   * of its code (the default, on this host only). `startPaused` starts it paused instead,
   * backs it up as a running domain and stops it again: for a remote hypervisor, or disks
   * that are not image files here.
   */
  startPaused?: boolean;
}

/** How a pull backup reads a remote hypervisor's disks. */
export interface RemoteOptions {
  /** The address the hypervisor's NBD server listens on and this host connects to; default the URI's host. */
  nbdHost?: string;
  /** Ports to try for the NBD server, the first free one taken; default 10809-10999. */
  nbdPorts?: { first: number; last: number };
  /** NBD over TLS (default true): false sends the disks' data in clear text. */
  tls?: boolean;
  /**
   * Directory holding cacert.pem, clientcert.pem and clientkey.pem (libvirt's `pkipath`
   * layout); default the URI's `pkipath`, then libvirt's client PKI paths (/etc/pki for
   * root, ~/.pki/libvirt for others).
   */
  tlsDir?: string;
}

export interface BackupHooks {
  /** After libvirt started the job (and the space check passed), before data moves. */
  afterJobStart?: () => void | Promise<void>;
  /** With the guest's file systems frozen, before the job starts (quiesce). */
  whileFrozen?: () => void | Promise<void>;
}

/** One step of a backup run, as `BackupOptions.onEvent` receives it. */
export type BackupEvent =
  | {
      type: 'start';
      backupId: string;
      level: BackupLevel;
      transport: BackupTransport;
      /** Why this level (e.g. "no usable chain", "bitmap of checkpoint X is gone"). */
      reason: string;
      disks: Array<{ target: string; level: BackupLevel; virtualSize: number }>;
    }
  /** Something the operator should know: a fallback, a redefined checkpoint, a cleanup. */
  | { type: 'notice'; message: string }
  | { type: 'progress'; target: string; bytesDone: number; bytesTotal: number }
  | { type: 'disk-done'; target: string; file: string; dataBytes: number }
  | { type: 'done'; backupId: string; level: BackupLevel; durationMs: number; dataBytes: number };

/** How long a quiesced backup kept the guest's file systems frozen, as the agent's replies bound it. */
export interface FreezeTiming {
  /** File systems the agent froze. */
  fileSystems: number;
  /** From asking the agent to freeze to its reply that they are thawed: the longest any guest write waited. */
  frozenMs: number;
  /** The freeze call alone: the agent syncs each file system as it freezes it. */
  freezeMs: number;
  /** The thaw call alone. */
  thawMs: number;
}

/** What a finished backup run added to the set: its id, level, transport, checkpoint, disk records and notices. */
export interface BackupResult {
  backupId: string;
  level: BackupLevel;
  transport: BackupTransport;
  checkpoint: string;
  disks: DiskRecord[];
  notices: string[];
  durationMs: number;
  /** The guest's file systems were frozen while the job started. */
  quiesced: boolean;
  /** How long, when they were. */
  freeze: FreezeTiming | null;
}

/** Why a backup run failed, as `BackupError.code`. */
export type BackupErrorCode =
  | 'DOMAIN_NOT_FOUND'
  | 'DOMAIN_NOT_RUNNING'
  | 'UNSUPPORTED'
  | 'INVALID_ARGUMENT'
  | 'NO_DISKS'
  | 'CHAIN_UNUSABLE'
  | 'DOMAIN_BUSY'
  /** The destination (or scratch) file system cannot hold what the run may still write; the job was ended before the guest could be refused a write. */
  | 'NO_SPACE'
  /** The domain stopped while its backup ran. */
  | 'DOMAIN_STOPPED'
  /** The connection to libvirtd was lost while the backup ran. */
  | 'DAEMON_LOST'
  | 'JOB_FAILED'
  /** The guest's file systems could not be frozen (quiesce `yes`) or thawed. */
  | 'QUIESCE_FAILED'
  | 'ABORTED';

/** A backup run that could not be done; `code` says which rule, the message says why. */
export class BackupError extends Error {
  readonly code: BackupErrorCode;

  constructor(code: BackupErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'BackupError';
    this.code = code;
  }
}
