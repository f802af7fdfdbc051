// What the pull copy's thread does with one disk's export: open it and work out what
// will be copied (before any data moves), then copy that into the backup's qcow2 file.
import { AllocationFlags, BASE_ALLOCATION, DirtyBitmapFlags, NbdClient, type NbdTlsOptions } from '../../nbd/index.js';
import { CLUSTER_SIZE, clusterRuns, planQcow2, type ClusterRun, type Qcow2LayoutInput } from '../qcow2/qcow2-layout.js';
import { writeQcow2, type Qcow2WriteResult } from '../qcow2/qcow2-writer.js';
import { directWriteMemory } from '../qcow2/direct-write-memory.js';
import type { ClusterCompression } from '../qcow2/cluster-compression.js';
import type { AlignedMemorySource } from '../../common/page-aligned.js';
import { tlsRelay } from './tls-relay.js';

/**
 * Where an export is read, in a form that crosses to another thread: TLS material as
 * PEM, and whether the addon's relay runs the TLS (a function does not cross).
 */
export type CopyEndpoint =
  { path: string } | { host: string; port: number; tls: (Omit<NbdTlsOptions, 'relay' | 'checkServerIdentity'> & { relay: boolean }) | null };

/** One disk's export and what the backup stores of it. */
export interface ExportRequest {
  endpoint: CopyEndpoint;
  exportName: string;
  /** The job's dirty bitmap of the disk: set for an incremental or differential backup. */
  dirtyBitmap: string | undefined;
  backingFile: string | null;
}

/** Where a copy writes, as the thread needs it. */
export interface CopyTarget {
  path: string;
  backingFile: string | null;
  compression: ClusterCompression | undefined;
}

/** What an opened export will put in its backup file. */
export interface ExportPlan {
  virtualSize: number;
  runs: ClusterRun[];
  /** Bytes of the backup file to be written (metadata included). */
  fileSize: number;
  /** Data the disk held when the job started: the most copy-before-write can put in its scratch. */
  scratchBound: number;
}

function connectOptions(endpoint: CopyEndpoint): { path: string } | { host: string; port: number; tls?: NbdTlsOptions } {
  if ('path' in endpoint) return { path: endpoint.path };
  if (endpoint.tls === null) return { host: endpoint.host, port: endpoint.port };
  const { relay, ca, cert, key, ...rest } = endpoint.tls;
  const tls: NbdTlsOptions = { ...rest, ...(relay ? { relay: tlsRelay } : {}) };
  if (ca !== undefined) tls.ca = Array.isArray(ca) ? ca.map(asBuffer) : asBuffer(ca);
  if (cert !== undefined) tls.cert = asBuffer(cert);
  if (key !== undefined) tls.key = asBuffer(key);
  return { host: endpoint.host, port: endpoint.port, tls };
}

/** A Buffer sent to another thread arrives as a plain Uint8Array: a Buffer again, same memory. */
function asBuffer(pem: string | Uint8Array): string | Buffer {
  return typeof pem === 'string' || Buffer.isBuffer(pem) ? pem : Buffer.from(pem.buffer, pem.byteOffset, pem.byteLength);
}

export async function openExport(request: ExportRequest, signal: AbortSignal): Promise<{ source: NbdClient; plan: ExportPlan }> {
  const dirtyContext = request.dirtyBitmap !== undefined ? `qemu:dirty-bitmap:${request.dirtyBitmap}` : undefined;
  const source = await NbdClient.connect({
    ...connectOptions(request.endpoint),
    exportName: request.exportName,
    metaContexts: dirtyContext ? ['base:allocation', dirtyContext] : ['base:allocation'],
    signal,
  });
  try {
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
    const fileSize = planQcow2(layoutInput(source.size, runs, request.backingFile)).fileSize;
    // Every connection past its handshake before the copy starts. QEMU 7.2 as Debian
    // ships it freezes, guest and all, when its NBD server stops while a client is
    // still negotiating (README, "Known problems"); libvirt stops it when the job ends,
    // an administrator may stop it at any time. close() lets a handshake finish before
    // the job is ended; this keeps the copy itself clear of the window. The extra
    // connections negotiated while block status was read, so it costs nothing.
    await source.ready();
    return { source, plan: { virtualSize: source.size, runs, fileSize, scratchBound } };
  } catch (error) {
    await source.close().catch(() => undefined);
    throw error;
  }
}

/** The file's layout: the same for the plan made when the export opens and for the copy. */
function layoutInput(virtualSize: number, runs: ClusterRun[], backingFile: string | null): Qcow2LayoutInput {
  return { virtualSize, runs, ...(backingFile !== null ? { backingFile, backingFormat: 'qcow2' } : {}) };
}

/** The guest bytes a run covers: its clusters, the last one cut at the disk's end. */
function runRange(run: ClusterRun, virtualSize: number): { offset: number; length: number } {
  const offset = run.start * CLUSTER_SIZE;
  return { offset, length: Math.min(run.count * CLUSTER_SIZE, virtualSize - offset) };
}

/** The bytes of the runs to copy, the figure progress counts towards. */
export function bytesToCopy(plan: ExportPlan): number {
  return plan.runs.reduce((sum, run) => sum + runRange(run, plan.virtualSize).length, 0);
}

/** Copies the plan's runs from `source` into a new qcow2 file at `path`; `onData` hears the data bytes read so far. */
export async function copyExport(
  source: NbdClient,
  plan: ExportPlan,
  target: CopyTarget,
  onData: (bytesRead: number) => void,
  signal: AbortSignal,
): Promise<Qcow2WriteResult> {
  // A memory source of this copy's own: the NBD stream pools its buffers per source, so
  // each run's reads reuse what the last released, and the pool goes with the copy.
  const alignedMemory: AlignedMemorySource = (bytes) => directWriteMemory(bytes);
  let bytesRead = 0;
  // Whole clusters are read, so a cluster only partly dirty still gets its current
  // bytes, never zeroes standing in for data the backing file has.
  const chunks = (async function* () {
    for (const run of plan.runs) {
      for await (const chunk of source.chunks({ range: runRange(run, source.size), reuseMemory: 'until-release', alignedMemory, signal })) {
        if (chunk.kind === 'data') bytesRead += chunk.length;
        yield chunk;
      }
    }
  })();
  return writeQcow2(target.path, layoutInput(source.size, plan.runs, target.backingFile), chunks, {
    signal,
    ...(target.compression ? { compression: target.compression } : {}),
    onProgress: () => onData(bytesRead),
  });
}
