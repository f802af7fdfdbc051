// Pull mode: our NBD client reads each disk's export, and the one-pass writer makes its
// qcow2 file, both on the run's pull copy thread (pull-copy-thread.ts).

import type { Domain } from '../../libvirt/domain.js';
import { BackupError } from './engine-types.js';
import { exportReadError } from './export-connection.js';
import { bytesToCopy, type CopyEndpoint } from './export-copy.js';
import { type PullCopyThread, type ThreadExport } from './pull-copy-thread.js';
import type { ClusterRun } from '../qcow2/qcow2-layout.js';
import { type SpaceNeed } from './space-guard.js';
import { type TcpExport } from './remote-export.js';
import type { OfflineExports } from './offline-images.js';
import { type DiskPlan, type ExecuteContext } from './run-context.js';

const PROGRESS_INTERVAL_MS = 200;

/** A disk's pull export, opened, with what will be copied from it. */
export interface OpenedExport {
  disk: DiskPlan;
  /**
   * Null once the disk is copied and its export closed: a client keeps its receive memory
   * (tens of MiB when writes are in flight) until nothing refers to it, and the disks still
   * to copy need that memory more.
   */
  source: ThreadExport | null;
  runs: ClusterRun[];
  /** Bytes of the backup file to be written (metadata included). */
  fileSize: number;
  /** Bytes of the file written so far. */
  written: number;
  /** Data the disk held when the job started: the most copy-before-write can put in its scratch. */
  scratchBound: number;
}

/**
 * Pull: what copy-before-write may still add to the scratch files, and what the backup files
 * still receive. Scratch files on a remote hypervisor (`scratchHere` false) take no space here.
 */
export async function pullSpaceNeed(domain: Domain, opened: readonly OpenedExport[], scratchHere = true): Promise<SpaceNeed> {
  // What the files still need is read last, just before the guard reads the free space:
  // counted before the job query, it would miss what the copy wrote meanwhile, and a
  // busy daemon's answer can take long enough for that to be megabytes.
  const output = () => opened.reduce((sum, entry) => sum + Math.max(0, entry.fileSize - entry.written), 0);
  if (!scratchHere) return { scratch: 0, output: output() };
  const bound = opened.reduce((sum, entry) => sum + entry.scratchBound, 0);
  // libvirt answers job queries with "backup job data missing" while a job starts or
  // ends: counting nothing as used then only makes the need larger.
  const stats = await domain.getJobStats().catch(() => undefined);
  const scratchUsed = stats?.diskTempUsed ?? 0;
  return {
    scratch: Math.max(0, bound - scratchUsed),
    output: output(),
  };
}

/** Where a pull job's export is read: a unix socket here, or a remote hypervisor's TCP port. */
export type ExportEndpoint = { path: string } | TcpExport;

function copyEndpoint(endpoint: ExportEndpoint): CopyEndpoint {
  if ('path' in endpoint) return { path: endpoint.path };
  if (endpoint.tls === null) return { host: endpoint.host, port: endpoint.port, tls: null };
  const { relay, checkServerIdentity, ...tls } = endpoint.tls;
  if (checkServerIdentity !== undefined) throw new TypeError('a pull export checked by a checkServerIdentity function cannot be read on the copy thread');
  return { host: endpoint.host, port: endpoint.port, tls: { ...tls, relay: relay !== undefined } };
}

/**
 * Connects to every disk's export and works out what will be copied from it, before any
 * data moves: the space guard needs the whole run's figures from the start.
 */
export async function openExports(
  context: ExecuteContext,
  thread: PullCopyThread,
  disks: DiskPlan[],
  endpoint: ExportEndpoint,
  signal: AbortSignal,
): Promise<OpenedExport[]> {
  const spec = await context.domain.backupGetSpec();
  const exports = new Map<string, { name: string; bitmap?: string }>();
  if (spec.mode === 'pull') {
    for (const d of spec.disks ?? []) {
      if (d.backup === 'no') continue;
      exports.set(d.name, { name: d.exportname ?? d.name, ...(d.exportbitmap !== undefined ? { bitmap: d.exportbitmap } : {}) });
    }
  }
  return openAll(disks, async (disk) => {
    try {
      return await openExport(thread, disk, endpoint, exports.get(disk.target) ?? { name: disk.target }, signal);
    } catch (error) {
      throw exportReadError(disk.target, error);
    }
  });
}

/** A shut-off domain's disks, each exported by its own qemu-nbd. */
export async function openOfflineExports(thread: PullCopyThread, disks: DiskPlan[], exports: OfflineExports, signal: AbortSignal): Promise<OpenedExport[]> {
  return openAll(disks, async (disk) => {
    const { path, bitmap } = exports.exportOf(disk.target);
    return openExport(thread, disk, { path }, { name: disk.target, ...(bitmap !== undefined ? { bitmap } : {}) }, signal);
  });
}

/** Opens the disks one after the other; none stays open if one fails. */
async function openAll(disks: readonly DiskPlan[], open: (disk: DiskPlan) => Promise<OpenedExport>): Promise<OpenedExport[]> {
  const opened: OpenedExport[] = [];
  try {
    for (const disk of disks) opened.push(await open(disk));
  } catch (error) {
    await closeExports(opened);
    throw error;
  }
  return opened;
}

/** Closes the exports not closed yet; never fails (the run has its own error to report). */
export async function closeExports(opened: readonly OpenedExport[]): Promise<void> {
  await Promise.all(
    opened.map(async (entry) => {
      const source = entry.source;
      entry.source = null;
      await source?.close().catch(() => undefined);
    }),
  );
}

async function openExport(
  thread: PullCopyThread,
  disk: DiskPlan,
  endpoint: ExportEndpoint,
  exported: { name: string; bitmap?: string },
  signal: AbortSignal,
): Promise<OpenedExport> {
  const dirtyBitmap = disk.level !== 'full' ? exported.bitmap : undefined;
  if (disk.level !== 'full' && dirtyBitmap === undefined) {
    throw new BackupError('JOB_FAILED', `libvirt exported ${disk.target} without a dirty bitmap for an ${disk.level} backup`);
  }
  const source = await thread.open({ endpoint: copyEndpoint(endpoint), exportName: exported.name, dirtyBitmap, backingFile: disk.backingFile }, signal);
  disk.virtualSize = source.plan.virtualSize;
  const { runs, fileSize, scratchBound } = source.plan;
  return { disk, source, runs, fileSize, written: 0, scratchBound };
}

export async function copyDisks(context: ExecuteContext, opened: OpenedExport[], signal: AbortSignal): Promise<void> {
  const queue = [...opened];
  const failures: unknown[] = [];
  const worker = async () => {
    while (queue.length > 0 && failures.length === 0) {
      const entry = queue.shift()!;
      try {
        await copyDisk(context, entry, signal);
      } catch (error) {
        failures.push(exportReadError(entry.disk.target, error));
      } finally {
        await closeExports([entry]);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(context.concurrency, opened.length)) }, worker));
  if (failures.length > 0) throw failures[0];
  signal.throwIfAborted();
}

async function copyDisk(context: ExecuteContext, entry: OpenedExport, signal: AbortSignal): Promise<void> {
  const { set, emit } = context;
  const { disk, source } = entry;
  if (source === null) throw new Error(`the export of ${disk.target} is closed`);
  // Progress follows the data to copy (known from block status), not the disk's size:
  // a 2 GiB disk holding 1 GiB shows 1 GiB to go, at the rate data really moves.
  let lastProgress = 0;
  const total = bytesToCopy(source.plan);
  const written = await source.copy(
    { path: set.pathOf(disk.file), backingFile: disk.backingFile, compression: context.compression ?? undefined },
    (bytesRead) => {
      entry.written = bytesRead;
      const now = Date.now();
      if (now - lastProgress < PROGRESS_INTERVAL_MS) return;
      lastProgress = now;
      emit({ type: 'progress', target: disk.target, bytesDone: Math.min(bytesRead, total), bytesTotal: total });
    },
    signal,
  );
  entry.written = entry.fileSize;
  disk.dataBytes = written.dataBytes;
  disk.written = { fileSize: written.fileSize, checksum: written.checksum, storedBytes: written.storedBytes, compression: context.compression };
  emit({ type: 'progress', target: disk.target, bytesDone: total, bytesTotal: total });
  emit({ type: 'disk-done', target: disk.target, file: disk.file, dataBytes: disk.dataBytes });
}
