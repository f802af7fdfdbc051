// Pull mode: our NBD client reads each disk's export, and the one-pass writer makes its qcow2 file.

import type { Domain } from '../../libvirt/domain.js';
import { AllocationFlags, BASE_ALLOCATION, DirtyBitmapFlags, NbdClient, type NbdTlsOptions } from '../../nbd/index.js';
import { BackupError } from './engine-types.js';
import { exportReadError } from './export-connection.js';
import { CLUSTER_SIZE, clusterRuns, planQcow2, type ClusterRun } from '../qcow2/qcow2-layout.js';
import { writeQcow2 } from '../qcow2/qcow2-writer.js';
import { directWriteMemory } from '../qcow2/direct-write-memory.js';
import type { AlignedMemorySource } from '../../common/page-aligned.js';
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
  source: NbdClient | null;
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

/**
 * Connects to every disk's export and works out what will be copied from it, before any
 * data moves: the space guard needs the whole run's figures from the start.
 */
/** Where a pull job's export is read: a unix socket here, or a remote hypervisor's TCP port. */
export type ExportEndpoint = { path: string } | TcpExport;

function endpointOptions(endpoint: ExportEndpoint): { path: string } | { host: string; port: number; tls?: NbdTlsOptions } {
  if ('path' in endpoint) return { path: endpoint.path };
  return { host: endpoint.host, port: endpoint.port, ...(endpoint.tls !== null ? { tls: endpoint.tls } : {}) };
}

export async function openExports(context: ExecuteContext, disks: DiskPlan[], endpoint: ExportEndpoint, signal: AbortSignal): Promise<OpenedExport[]> {
  const spec = await context.domain.backupGetSpec();
  const exports = new Map<string, { name: string; bitmap?: string }>();
  if (spec.mode === 'pull') {
    for (const d of spec.disks ?? []) {
      if (d.backup === 'no') continue;
      exports.set(d.name, { name: d.exportname ?? d.name, ...(d.exportbitmap !== undefined ? { bitmap: d.exportbitmap } : {}) });
    }
  }
  const opened: OpenedExport[] = [];
  try {
    for (const disk of disks) {
      try {
        opened.push(await openExport(disk, endpoint, exports.get(disk.target) ?? { name: disk.target }, signal));
      } catch (error) {
        throw exportReadError(disk.target, error);
      }
    }
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

/** A shut-off domain's disks, each exported by its own qemu-nbd. */
export async function openOfflineExports(disks: DiskPlan[], exports: OfflineExports, signal: AbortSignal): Promise<OpenedExport[]> {
  const opened: OpenedExport[] = [];
  try {
    for (const disk of disks) {
      const { path, bitmap } = exports.exportOf(disk.target);
      opened.push(await openExport(disk, { path }, { name: disk.target, ...(bitmap !== undefined ? { bitmap } : {}) }, signal));
    }
  } catch (error) {
    await closeExports(opened);
    throw error;
  }
  return opened;
}

async function openExport(disk: DiskPlan, endpoint: ExportEndpoint, exported: { name: string; bitmap?: string }, signal: AbortSignal): Promise<OpenedExport> {
  const dirtyContext = disk.level !== 'full' && exported.bitmap !== undefined ? `qemu:dirty-bitmap:${exported.bitmap}` : undefined;
  if (disk.level !== 'full' && dirtyContext === undefined) {
    throw new BackupError('JOB_FAILED', `libvirt exported ${disk.target} without a dirty bitmap for an ${disk.level} backup`);
  }
  const source = await NbdClient.connect({
    ...endpointOptions(endpoint),
    exportName: exported.name,
    metaContexts: dirtyContext ? ['base:allocation', dirtyContext] : ['base:allocation'],
    signal,
  });
  try {
    disk.virtualSize = source.size;
    // Data the disk holds (allocated, not reading as zeroes): what a full copies, and
    // the most copy-before-write can ever put in the scratch, whatever the level.
    const allocated: Array<{ offset: number; length: number }> = [];
    for await (const extent of source.extents(BASE_ALLOCATION, undefined, { signal })) {
      if (!(extent.flags & AllocationFlags.ZERO)) allocated.push(extent);
    }
    // The clusters this file stores: what changed (incremental), or what is allocated
    // and not zero (full). Everything else reads from the backing file, or as zeroes.
    let stored = allocated;
    if (dirtyContext) {
      stored = [];
      for await (const extent of source.extents(dirtyContext, undefined, { signal })) {
        if (extent.flags & DirtyBitmapFlags.DIRTY) stored.push(extent);
      }
    }
    const runs = clusterRuns(stored);
    const scratchBound = clusterRuns(allocated).reduce((sum, run) => sum + run.count * CLUSTER_SIZE, 0);
    const fileSize = planQcow2({
      virtualSize: source.size,
      runs,
      ...(disk.backingFile !== null ? { backingFile: disk.backingFile, backingFormat: 'qcow2' } : {}),
    }).fileSize;
    // Every connection past its handshake before the copy starts. QEMU 7.2 as Debian
    // ships it freezes, guest and all, when its NBD server stops while a client is
    // still negotiating (README, "Known problems"); libvirt stops it when the job ends,
    // an administrator may stop it at any time. close() lets a handshake finish before
    // the job is ended; this keeps the copy itself clear of the window. The extra
    // connections negotiated while block status was read, so it costs nothing.
    await source.ready();
    return { disk, source, runs, fileSize, written: 0, scratchBound };
  } catch (error) {
    await source.close().catch(() => undefined);
    throw error;
  }
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
  const { disk, source, runs } = entry;
  if (source === null) throw new Error(`the export of ${disk.target} is closed`);
  // One source for all the disk's runs, so each run's reads reuse what the last released.
  const alignedMemory: AlignedMemorySource = (bytes) => directWriteMemory(bytes);
  // Whole clusters are read, so a cluster only partly dirty still gets its current
  // bytes, never zeroes standing in for data the backing file has.
  const chunks = (async function* () {
    for (const run of runs) {
      const offset = run.start * CLUSTER_SIZE;
      const length = Math.min(run.count * CLUSTER_SIZE, source.size - offset);
      for await (const chunk of source.chunks({ range: { offset, length }, reuseMemory: 'until-release', alignedMemory, signal })) {
        if (chunk.kind === 'data') entry.written += chunk.length;
        yield chunk;
      }
    }
  })();
  // Progress follows the data to copy (known from block status), not the disk's size:
  // a 2 GiB disk holding 1 GiB shows 1 GiB to go, at the rate data really moves.
  let lastProgress = 0;
  let copied = 0;
  const total = runs.reduce((sum, run) => sum + Math.min(run.count * CLUSTER_SIZE, source.size - run.start * CLUSTER_SIZE), 0);
  const written = await writeQcow2(
    set.pathOf(disk.file),
    {
      virtualSize: source.size,
      runs,
      ...(disk.backingFile !== null ? { backingFile: disk.backingFile, backingFormat: 'qcow2' } : {}),
    },
    chunks,
    {
      signal,
      ...(context.compression ? { compression: context.compression } : {}),
      onProgress: () => {
        copied = entry.written;
        const now = Date.now();
        if (now - lastProgress < PROGRESS_INTERVAL_MS) return;
        lastProgress = now;
        emit({ type: 'progress', target: disk.target, bytesDone: Math.min(copied, total), bytesTotal: total });
      },
    },
  );
  entry.written = entry.fileSize;
  disk.dataBytes = written.dataBytes;
  disk.written = { fileSize: written.fileSize, checksum: written.checksum, storedBytes: written.storedBytes, compression: context.compression };
  emit({ type: 'progress', target: disk.target, bytesDone: total, bytesTotal: total });
  emit({ type: 'disk-done', target: disk.target, file: disk.file, dataBytes: disk.dataBytes });
}
