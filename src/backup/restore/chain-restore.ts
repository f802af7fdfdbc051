// Restores one disk from its qcow2 chain, checking each file against the checksum and
// size the manifest recorded in the same read that copies it. The metadata (headers,
// L1 and L2 tables) is read first with small positioned reads; then each file is read
// once, front to back, and its data lands in the output as the read passes it.
import { chmod, open, unlink, type FileHandle } from 'node:fs/promises';
import { fsyncFile } from '../set/atomic-file.js';
import { planChainCopy, planGuestOrder, type FileCopyPieces } from '../qcow2/chain-copy-plan.js';
import { ChainGuestStream, type GuestRun } from '../qcow2/chain-guest-stream.js';
import type { ClusterRun } from '../qcow2/qcow2-layout.js';
import { CHUNK_BYTES, ReadBufferPool, streamChainFile, type GuestWriter, type StreamedFile } from '../qcow2/chain-stream.js';
import { checksumAlgorithm } from '../checksum.js';
import { BackupSetError, isBackupSetError, throwIfAborted } from '../errors.js';
import { describeFsError, errnoCode } from '../../common/fs-errors.js';
import { qemuImgConvert, qemuImgInfo } from '../qcow2/qemu-img.js';
import { fileByteSource, readQcow2Image, type Qcow2Image } from '../qcow2/qcow2-reader.js';
import { createPrivateFile, DEFAULT_OUTPUT_MODE, openRestoreOutput, type RestoreOutput } from './restore-output.js';

/** One file of a chain as the manifest describes it. */
export interface ChainFile {
  /** The name used in messages (the manifest's file name). */
  name: string;
  path: string;
  /** `algorithm:hex` the file's bytes must hash to. */
  checksum: string;
  size: number;
  /** The backing file name its header must carry; null for the base. */
  backingFile: string | null;
  virtualSize: number;
}

export interface OpenChainOptions {
  signal?: AbortSignal;
  /** Whether a backing name stored as `actual` designates the file the manifest calls `expected`. */
  backingMatches?: (actual: string, expected: string) => boolean;
  /** Appended to messages about a chain that does not hold together. */
  chainHint?: string;
}

export interface ChainRestoreOptions {
  format: 'raw' | 'qcow2';
  /** Fail on a checksum or size mismatch (default); false restores anyway and says so in a notice. */
  verifyChecksums?: boolean;
  /** When the reader refuses a file: restore with qemu-img instead (default), or fail. */
  qemuImgFallback?: boolean;
  /** Mode of the output, whatever the umask (default 0o600). */
  mode?: number;
  signal?: AbortSignal;
  onProgress?: (fraction: number) => void;
  onNotice?: (message: string) => void;
}

export interface ChainRestoreReport {
  /** 'one-pass': our reader; 'qemu-img': it refused a file and qemu-img converted the chain. */
  method: 'one-pass' | 'qemu-img';
  /** Bytes read front to back by the checksum pass (each file once). */
  bytesStreamed: number;
  /** Bytes read for headers and mapping tables. */
  metadataBytesRead: number;
}

const READER_REFUSALS = new Set(['CHAIN_BROKEN', 'IMAGE_UNSUPPORTED']);

export interface GuestOrderOptions {
  /** Fail on a checksum or size mismatch (default); false streams anyway and says so in a notice. */
  verifyChecksums?: boolean;
  signal?: AbortSignal;
  onProgress?: (fraction: number) => void;
  onNotice?: (message: string) => void;
}

/** One disk of a chain as a stream of guest runs, front to back, checked as it is read. */
export interface GuestOrderedDisk {
  virtualSize: number;
  /** Output clusters that hold data (what a qcow2 image of the disk stores). */
  dataRuns: readonly ClusterRun[];
  /**
   * The runs, covering the whole disk. After the last one every file has been read to its
   * end and judged: a damaged file makes the iteration throw CHECKSUM_MISMATCH there, so a
   * consumer that has not seen the iteration end cleanly must not keep what it wrote.
   */
  runs(): AsyncGenerator<GuestRun>;
  /** Once the runs are exhausted. */
  report(): ChainRestoreReport;
}

/**
 * A chain whose files are open and whose metadata is read and checked against the
 * manifest. A file our reader refuses does not fail the open: whether it is damaged
 * (checksum) or only unusual (qemu-img then reads it) is for the restore to find out.
 */
export class OpenedChain {
  #metadataBytesRead = 0;

  private constructor(
    readonly files: readonly ChainFile[],
    private readonly handles: readonly FileHandle[],
    private readonly sizes: readonly number[],
    /** Null where the reader refused the file. */
    private readonly images: ReadonlyArray<Qcow2Image | null>,
    /** The first refusal, if any. */
    readonly refusal: BackupSetError | null,
    metadataBytesRead: number,
    private readonly options: OpenChainOptions,
  ) {
    this.#metadataBytesRead = metadataBytesRead;
  }

  get metadataBytesRead(): number {
    return this.#metadataBytesRead;
  }

  /** Opens `files` (base first), reads their metadata and checks headers against the manifest. */
  static async open(files: readonly ChainFile[], options: OpenChainOptions = {}): Promise<OpenedChain> {
    if (files.length === 0) throw new BackupSetError('INVALID_ARGUMENT', 'a chain has at least one file');
    const handles: FileHandle[] = [];
    try {
      const sizes: number[] = [];
      const images: Array<Qcow2Image | null> = [];
      let refusal: BackupSetError | null = null;
      let metadataBytesRead = 0;
      for (const file of files) {
        throwIfAborted(options.signal);
        const handle = await openChainFile(file);
        handles.push(handle);
        const size = (await handle.stat()).size;
        sizes.push(size);
        try {
          images.push(
            await readQcow2Image(
              fileByteSource(handle, size, (bytes) => (metadataBytesRead += bytes)),
              file.name,
              { signal: options.signal },
            ),
          );
        } catch (error) {
          if (!isBackupSetError(error) || !READER_REFUSALS.has(error.code)) throw error;
          images.push(null);
          refusal ??= error;
        }
      }
      files.forEach((file, index) => {
        const image = images[index];
        if (image) assertHeaderMatches(file, image, options);
      });
      return new OpenedChain(files, handles, sizes, images, refusal, metadataBytesRead, options);
    } catch (error) {
      await Promise.allSettled(handles.map((handle) => handle.close()));
      throw error;
    }
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.handles.map((handle) => handle.close()));
  }

  /**
   * Writes the disk to `output` (which must not exist). On failure nothing is left at
   * `output`. With checksums verified, a damaged file fails the restore with
   * CHECKSUM_MISMATCH once its read ends.
   */
  async restoreTo(output: string, options: ChainRestoreOptions): Promise<ChainRestoreReport> {
    const verify = options.verifyChecksums !== false;
    const pool = new ReadBufferPool(CHUNK_BYTES);
    const totalBytes = this.sizes.reduce((sum, size) => sum + size, 0);
    let bytesStreamed = 0;
    // Progress is the share of the chain's bytes read; `progressScale` leaves room for a conversion after.
    const stream = (index: number, pieces: FileCopyPieces | null, sink: GuestWriter | null, progressScale = 1): Promise<StreamedFile> =>
      streamChainFile(this.handles[index]!, this.sizes[index]!, checksumAlgorithm(this.files[index]!.checksum), pieces, sink, pool, {
        name: this.files[index]!.name,
        signal: options.signal,
        onRead: (bytes) => {
          bytesStreamed += bytes;
          options.onProgress?.(totalBytes === 0 ? 1 : Math.min(1, (bytesStreamed / totalBytes) * progressScale));
        },
      });
    const judge = (index: number, streamed: StreamedFile) => {
      const problem = damage(this.files[index]!, this.sizes[index]!, streamed.checksum);
      if (problem === null) return;
      if (verify) throw new BackupSetError('CHECKSUM_MISMATCH', problem, { path: this.files[index]!.path });
      options.onNotice?.(`${problem}; restored anyway because checksum verification is off`);
    };

    // A file of the wrong size is damaged whatever it holds: one read of it proves it, before anything is written.
    if (verify) {
      for (let index = 0; index < this.files.length; index++) {
        if (this.sizes[index] !== this.files[index]!.size) judge(index, await stream(index, null, null, 0));
      }
    }

    let file: FileHandle | null = null;
    let sink: RestoreOutput | null = null;
    let created = false;
    try {
      if (this.refusal === null) {
        const plan = planChainCopy(this.images as Qcow2Image[], CHUNK_BYTES);
        file = await createPrivateFile(output, options.mode ?? DEFAULT_OUTPUT_MODE);
        created = true;
        sink = await openRestoreOutput(file, options.format, plan, { signal: options.signal });
        for (let index = 0; index < this.files.length; index++) judge(index, await stream(index, plan.files[index]!, sink));
        await sink.finish();
        return { method: 'one-pass', bytesStreamed, metadataBytesRead: this.#metadataBytesRead };
      }

      if (options.qemuImgFallback === false) throw this.refusal;
      // The only place a chain is read twice: our reader refused a file, so its bytes are
      // checked on their own first, then qemu-img reads the chain to convert it.
      const convertShare = 0.5;
      if (verify) {
        for (let index = 0; index < this.files.length; index++) judge(index, await stream(index, null, null, convertShare));
      }
      options.onNotice?.(`${this.refusal.message}; restoring this disk with qemu-img convert instead`);
      await assertQemuImgSeesChain(this.files, this.options, options.signal);
      // qemu-img opens the existing file and keeps its mode; set again below all the same.
      file = await createPrivateFile(output, options.mode ?? DEFAULT_OUTPUT_MODE);
      created = true;
      await file.close();
      file = null;
      const done = verify ? convertShare : 0;
      await qemuImgConvert(this.files.at(-1)!.path, output, {
        sourceFormat: 'qcow2',
        outputFormat: options.format,
        signal: options.signal,
        dieWithParent: true,
        onProgress: (fraction) => options.onProgress?.(done + fraction * (1 - done)),
      });
      await chmod(output, options.mode ?? DEFAULT_OUTPUT_MODE);
      await fsyncFile(output);
      return { method: 'qemu-img', bytesStreamed, metadataBytesRead: this.#metadataBytesRead };
    } catch (error) {
      if (created) await unlink(output).catch(() => undefined);
      throw error;
    } finally {
      // streamChainFile settles every write before it returns or throws.
      await sink?.close();
      await file?.close();
    }
  }

  /**
   * The disk in guest order, for writers that can only go front to back (a stream to a
   * storage volume). Each file is still read once and checksummed as it passes (see
   * chain-guest-stream.ts). A file our reader refused cannot be streamed this way: that
   * throws the reader's error.
   */
  guestOrdered(options: GuestOrderOptions): GuestOrderedDisk {
    if (this.refusal !== null) throw this.refusal;
    const verify = options.verifyChecksums !== false;
    const plan = planGuestOrder(this.images as Qcow2Image[]);
    const totalBytes = this.sizes.reduce((sum, size) => sum + size, 0);
    let bytesRead = 0;
    const stream = new ChainGuestStream(
      plan,
      this.files.map((file, index) => ({
        handle: this.handles[index]!,
        size: this.sizes[index]!,
        algorithm: checksumAlgorithm(file.checksum),
        clusterSize: this.images[index]!.header.clusterSize,
        compression: this.images[index]!.header.compression,
        name: file.name,
      })),
      {
        signal: options.signal,
        onRead: (bytes) => {
          bytesRead += bytes;
          options.onProgress?.(totalBytes === 0 ? 1 : Math.min(1, bytesRead / totalBytes));
        },
      },
    );
    let report: ChainRestoreReport | null = null;
    const files = this.files;
    const sizes = this.sizes;
    const metadataBytesRead = this.#metadataBytesRead;
    async function* runs(): AsyncGenerator<GuestRun> {
      // A file of the wrong size is damaged whatever it holds: refused before anything is sent.
      if (verify) {
        files.forEach((file, index) => {
          if (sizes[index] !== file.size) {
            throw new BackupSetError(
              'CHECKSUM_MISMATCH',
              `${file.name}: the file is ${sizes[index]} bytes, the manifest says ${file.size}; the file is damaged`,
              {
                path: file.path,
              },
            );
          }
        });
      }
      yield* stream.runs();
      const result = stream.result();
      files.forEach((file, index) => {
        const problem = damage(file, sizes[index]!, result.checksums[index]!);
        if (problem === null) return;
        if (verify) throw new BackupSetError('CHECKSUM_MISMATCH', problem, { path: file.path });
        options.onNotice?.(`${problem}; restored anyway because checksum verification is off`);
      });
      if (result.bytesReread > 0) {
        options.onNotice?.(`${result.bytesReread} bytes of the chain were read twice: some clusters are not stored in guest order`);
      }
      report = { method: 'one-pass', bytesStreamed: result.bytesRead, metadataBytesRead };
    }
    return {
      virtualSize: plan.virtualSize,
      dataRuns: plan.dataRuns,
      runs,
      report: () => {
        if (report === null) throw new Error('the disk has not been streamed to its end yet');
        return report;
      },
    };
  }
}

/** Opens, restores and closes: `OpenedChain` for callers that open several chains before writing. */
export async function restoreChain(files: readonly ChainFile[], output: string, options: ChainRestoreOptions & OpenChainOptions): Promise<ChainRestoreReport> {
  const chain = await OpenedChain.open(files, options);
  try {
    return await chain.restoreTo(output, options);
  } finally {
    await chain.close();
  }
}

async function openChainFile(file: ChainFile): Promise<FileHandle> {
  try {
    return await open(file.path, 'r');
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') throw new BackupSetError('CHAIN_BROKEN', `${file.name} is missing`, { path: file.path, cause: error });
    throw new BackupSetError('SET_IO', `cannot read ${file.path}: ${describeFsError(error)}`, { path: file.path, cause: error });
  }
}

function assertHeaderMatches(file: ChainFile, image: Qcow2Image, options: OpenChainOptions): void {
  const actual = image.header.backingFile;
  const expected = file.backingFile;
  const same = actual === expected || (actual !== null && expected !== null && options.backingMatches?.(actual, expected) === true);
  if (!same) {
    throw new BackupSetError(
      'CHAIN_BROKEN',
      `${file.name}: backing file is ${actual ?? 'none'} but the manifest says ${expected ?? 'none'}${options.chainHint ?? ''}`,
      { path: file.path },
    );
  }
  if (image.header.virtualSize !== file.virtualSize) {
    throw new BackupSetError('CHAIN_BROKEN', `${file.name}: virtual size is ${image.header.virtualSize} bytes but the manifest says ${file.virtualSize}`, {
      path: file.path,
    });
  }
}

/** What is wrong with a file's bytes, or null when they are what the manifest says. */
function damage(file: ChainFile, size: number, checksum: string): string | null {
  if (size !== file.size)
    return `${file.name}: the file is ${size} bytes with checksum ${checksum}, the manifest says ${file.size} bytes with ${file.checksum}; the file is damaged`;
  if (checksum !== file.checksum) return `${file.name}: checksum is ${checksum}, the manifest says ${file.checksum}; the file is damaged`;
  return null;
}

/** qemu-img follows the backing names in the headers: they must name the manifest's files. */
async function assertQemuImgSeesChain(files: readonly ChainFile[], options: OpenChainOptions, signal: AbortSignal | undefined): Promise<void> {
  for (const file of files) {
    const info = await qemuImgInfo(file.path, { signal });
    if (info.format !== 'qcow2') throw new BackupSetError('CHAIN_BROKEN', `${file.name}: is ${info.format}, not qcow2`, { path: file.path });
    const actual = info.backingFilename ?? null;
    const expected = file.backingFile;
    const same = actual === expected || (actual !== null && expected !== null && options.backingMatches?.(actual, expected) === true);
    if (!same) {
      throw new BackupSetError(
        'CHAIN_BROKEN',
        `${file.name}: backing file is ${actual ?? 'none'} but the manifest says ${expected ?? 'none'}${options.chainHint ?? ''}`,
        { path: file.path },
      );
    }
  }
}
