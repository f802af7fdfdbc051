import { execFile, spawn } from 'node:child_process';
import { BackupSetError, abortedError, throwIfAborted } from '../errors.js';
import { errnoCode } from '../../common/fs-errors.js';
import { dieWithParent } from '../../common/die-with-parent.js';

/**
 * Typed wrappers around the `qemu-img` command. Using the tool rather than parsing qcow2
 * ourselves keeps the set readable by anything that understands qcow2, and means the
 * code that writes the images is the same one users will run on them.
 */

/** The executable; overridable so a host with qemu-img outside PATH still works. */
export function qemuImgCommand(): string {
  return process.env['LIBVIRT_BACKUP_QEMU_IMG'] ?? 'qemu-img';
}

/** Options every `qemu-img` call takes: an `AbortSignal` that ends the process. */
export interface QemuImgOptions {
  signal?: AbortSignal;
}

/** What `qemu-img info` says about an image. */
export interface ImageInfo {
  filename: string;
  format: string;
  virtualSize: number;
  actualSize: number | undefined;
  clusterSize: number | undefined;
  /** The backing file name exactly as stored in the image header (relative names stay relative). */
  backingFilename: string | undefined;
  /** The backing file name resolved against the image's directory. */
  fullBackingFilename: string | undefined;
  backingFormat: string | undefined;
  dirty: boolean;
  /** qcow2 marks an image corrupt when it detects metadata damage. */
  corrupt: boolean;
}

/** What `qemu-img check` found in an image. */
export interface CheckResult {
  /** No corruption and no check errors; leaked clusters only waste space and do not count. */
  clean: boolean;
  corruptions: number;
  leaks: number;
  checkErrors: number;
  /** qemu-img's own words when the check could not run at all. */
  stderr: string;
}

/** One extent of `qemu-img map`: a range of the image and whether it holds data or zeroes. */
export interface MapExtent {
  start: number;
  length: number;
  /** 0 = this image, 1 = its backing file, ... */
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  offset: number | undefined;
}

interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

/** Output of map on a big sparse image can be long; plenty of room but still bounded. */
const MAX_OUTPUT_BYTES = 256 * 1024 * 1024;

function run(args: string[], options: QemuImgOptions & { okExitCodes?: number[] } = {}): Promise<RunResult> {
  throwIfAborted(options.signal);
  const okExitCodes = options.okExitCodes ?? [0];
  return new Promise((resolve, reject) => {
    execFile(
      qemuImgCommand(),
      args,
      { signal: options.signal, maxBuffer: MAX_OUTPUT_BYTES, encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } },
      (error, stdout, stderr) => {
        if (options.signal?.aborted) {
          reject(abortedError(options.signal));
          return;
        }
        const exitCode = error === null ? 0 : typeof error.code === 'number' ? error.code : -1;
        if (error !== null && !okExitCodes.includes(exitCode)) {
          reject(qemuImgError(args, error, stderr));
          return;
        }
        resolve({ stdout, stderr, exitCode });
      },
    );
  });
}

function qemuImgError(args: string[], error: unknown, stderr: string): BackupSetError {
  if (errnoCode(error) === 'ENOENT') {
    return new BackupSetError('QEMU_IMG_FAILED', `${qemuImgCommand()} not found: install qemu-utils (or set LIBVIRT_BACKUP_QEMU_IMG)`, {
      cause: error,
    });
  }
  const detail = stderr.trim() || (error instanceof Error ? error.message : String(error));
  return new BackupSetError('QEMU_IMG_FAILED', `qemu-img ${args[0] ?? ''} failed: ${detail}`, { cause: error });
}

function parseJson(text: string, args: string[]): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new BackupSetError('QEMU_IMG_FAILED', `qemu-img ${args[0] ?? ''} printed output that is not JSON`, { cause: error });
  }
}

function toImageInfo(raw: unknown): ImageInfo {
  const object = raw as Record<string, unknown>;
  const formatSpecific = object['format-specific'] as { data?: { corrupt?: unknown } } | undefined;
  return {
    filename: String(object['filename']),
    format: String(object['format']),
    virtualSize: Number(object['virtual-size']),
    actualSize: typeof object['actual-size'] === 'number' ? object['actual-size'] : undefined,
    clusterSize: typeof object['cluster-size'] === 'number' ? object['cluster-size'] : undefined,
    backingFilename: typeof object['backing-filename'] === 'string' ? object['backing-filename'] : undefined,
    fullBackingFilename: typeof object['full-backing-filename'] === 'string' ? object['full-backing-filename'] : undefined,
    backingFormat: typeof object['backing-filename-format'] === 'string' ? object['backing-filename-format'] : undefined,
    dirty: object['dirty-flag'] === true,
    corrupt: formatSpecific?.data?.corrupt === true,
  };
}

/**
 * Reads one image's header. Without `backingChain` the backing file is not opened, so this
 * works (and tells us the stored backing name) even when the backing file is missing.
 * `-U` lets us inspect images another process has open, e.g. a backup being written.
 */
export async function qemuImgInfo(path: string, options: QemuImgOptions & { format?: string } = {}): Promise<ImageInfo> {
  const args = ['info', '--output=json', '-U', ...(options.format ? ['-f', options.format] : []), path];
  const { stdout } = await run(args, options);
  return toImageInfo(parseJson(stdout, args));
}

/** The image and every backing file below it, top first. Fails if a backing file is missing. */
export async function qemuImgInfoChain(path: string, options: QemuImgOptions = {}): Promise<ImageInfo[]> {
  const args = ['info', '--output=json', '-U', '--backing-chain', path];
  const { stdout } = await run(args, options);
  const parsed = parseJson(stdout, args);
  return (Array.isArray(parsed) ? parsed : [parsed]).map(toImageInfo);
}

/** Options of `qemuImgCreate()`. */
export interface CreateOptions extends QemuImgOptions {
  format: 'qcow2' | 'raw';
  /** Bytes; may be omitted when a backing file gives the size. */
  size?: number;
  /** Stored as given: pass a basename to keep the chain relocatable. */
  backingFile?: string;
  backingFormat?: string;
  /** `-o` options, e.g. `{ cluster_size: '65536' }`. */
  options?: Record<string, string>;
}

/** Creates an image with `qemu-img create`, on a backing file when one is given. */
export async function qemuImgCreate(path: string, options: CreateOptions): Promise<void> {
  const args = ['create', '-q', '-f', options.format];
  if (options.backingFile !== undefined) args.push('-b', options.backingFile, '-F', options.backingFormat ?? 'qcow2');
  if (options.options) args.push('-o', formatOptions(options.options));
  args.push(path);
  if (options.size !== undefined) args.push(String(options.size));
  await run(args, options);
}

/** Options of `qemuImgConvert()`. */
export interface ConvertOptions extends QemuImgOptions {
  sourceFormat?: string;
  outputFormat: 'qcow2' | 'raw';
  /**
   * Make the output an overlay of this file: only data that differs from it is written.
   * Stored in the output as given (use a name relative to the output's directory).
   */
  backingFile?: string;
  backingFormat?: string;
  options?: Record<string, string>;
  /** Fraction 0..1, from qemu-img's `-p` output. */
  onProgress?: (fraction: number) => void;
  /**
   * Have the kernel kill qemu-img if this process dies without stopping it (SIGKILL,
   * a crash): through `setpriv --pdeathsig` where util-linux provides it.
   */
  dieWithParent?: boolean;
}

/**
 * Copies the guest-visible content of `source` (following its whole backing chain) into a
 * new image. Note that with `backingFile` qemu-img only copies what the source's top layer
 * allocates, assuming the rest equals the new backing file; to merge several layers onto
 * an older base use `qemuImgRebaseSafe` on a copy instead.
 */
export function qemuImgConvert(source: string, destination: string, options: ConvertOptions): Promise<void> {
  const args = ['convert', '-p', '-O', options.outputFormat];
  if (options.sourceFormat) args.push('-f', options.sourceFormat);
  if (options.backingFile !== undefined) args.push('-B', options.backingFile, '-F', options.backingFormat ?? 'qcow2');
  if (options.options) args.push('-o', formatOptions(options.options));
  args.push(source, destination);
  return runWithProgress(args, options);
}

/**
 * Changes the backing file of a qcow2 image and writes into it whatever differs between
 * the old and the new backing chain, so its guest content stays the same. Modifies `path`
 * in place: use it on a file that nothing references yet.
 */
export function qemuImgRebaseSafe(
  path: string,
  backingFile: string,
  options: QemuImgOptions & { backingFormat?: string; onProgress?: (fraction: number) => void } = {},
): Promise<void> {
  return runWithProgress(['rebase', '-p', '-f', 'qcow2', '-F', options.backingFormat ?? 'qcow2', '-b', backingFile, path], options);
}

/** Spawned rather than execFile'd so `-p` progress can be read as it is printed. */
function runWithProgress(args: string[], options: QemuImgOptions & { onProgress?: (fraction: number) => void; dieWithParent?: boolean }): Promise<void> {
  throwIfAborted(options.signal);
  const [command, commandArgs] = options.dieWithParent ? dieWithParent(qemuImgCommand(), args) : [qemuImgCommand(), args];
  return new Promise((resolve, reject) => {
    const child = spawn(command, commandArgs, {
      signal: options.signal,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, LC_ALL: 'C' },
    });
    let stderr = '';
    let pending = '';
    child.stderr.setEncoding('utf8').on('data', (text: string) => {
      if (stderr.length < 64 * 1024) stderr += text;
    });
    child.stdout.setEncoding('utf8').on('data', (text: string) => {
      pending += text;
      const parts = pending.split(/[\r\n]/);
      pending = parts.pop() ?? '';
      for (const part of parts) {
        const match = /\(([\d.]+)\/100%\)/.exec(part);
        if (match && options.onProgress) options.onProgress(Math.min(1, Number(match[1]) / 100));
      }
    });
    child.on('error', (error) => {
      if (options.signal?.aborted) reject(abortedError(options.signal));
      else reject(qemuImgError(args, error, stderr));
    });
    child.on('close', (code, signalName) => {
      if (options.signal?.aborted) reject(abortedError(options.signal));
      else if (code === 0) resolve();
      else if (command !== qemuImgCommand() && code === 127 && /failed to execute/.test(stderr))
        reject(qemuImgError(args, Object.assign(new Error(stderr.trim()), { code: 'ENOENT' }), stderr));
      else reject(qemuImgError(args, new Error(`exited with ${code ?? signalName}`), stderr));
    });
  });
}

/**
 * Rewrites only the backing file name in the header (`rebase -u`). Correct only when the new
 * backing file has the same guest content as the old one, which is what prune guarantees.
 */
export async function qemuImgRebaseUnsafe(path: string, backingFile: string | null, options: QemuImgOptions & { backingFormat?: string } = {}): Promise<void> {
  const args = ['rebase', '-u', '-f', 'qcow2'];
  if (backingFile === null) args.push('-b', '');
  else args.push('-F', options.backingFormat ?? 'qcow2', '-b', backingFile);
  args.push(path);
  await run(args, options);
}

/**
 * Checks one image's metadata. The image is opened without its backing chain (a qcow2
 * check never needs it), so a missing backing file does not hide damage in this file.
 */
export async function qemuImgCheck(path: string, options: QemuImgOptions & { format?: string } = {}): Promise<CheckResult> {
  const format = options.format ?? 'qcow2';
  const target = format === 'qcow2' ? `json:${JSON.stringify({ driver: 'qcow2', backing: null, file: { driver: 'file', filename: path } })}` : path;
  const args = ['check', '--output=json', ...(format === 'qcow2' ? [] : ['-f', format]), target];
  // 2 = corruptions found, 3 = leaks only; both still print the JSON report.
  const { stdout, stderr: rawStderr, exitCode } = await run(args, { ...options, okExitCodes: [0, 1, 2, 3] });
  // qemu-img names the image by the json: target it was given; people know it by its path.
  const stderr = rawStderr.replaceAll(target, path).trim();
  if (exitCode === 1 && stdout.trim() === '') {
    return { clean: false, corruptions: 0, leaks: 0, checkErrors: 1, stderr };
  }
  const report = parseJson(stdout, args) as Record<string, unknown>;
  const corruptions = Number(report['corruptions'] ?? 0);
  const leaks = Number(report['leaks'] ?? 0);
  const checkErrors = Number(report['check-errors'] ?? 0);
  return { clean: corruptions === 0 && checkErrors === 0 && exitCode !== 1, corruptions, leaks, checkErrors, stderr };
}

/**
 * The line of qemu-img's output that says what is wrong, for a one-line report, and how
 * many other lines there were. `check` prints a line per damaged cluster (hundreds for a
 * truncated file) after any leak lines, so the first error line is the one to show; the
 * `qemu-img:` prefix and the "Could not open '<path>'" a caller already names are dropped.
 */
export function summariseQemuImgOutput(text: string, path?: string): { line: string; more: number } {
  const lines = text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '');
  const chosen = lines.find((line) => /^ERROR\b/.test(line)) ?? lines[0] ?? '';
  let line = chosen.replace(/(^|: )qemu-img: /g, '$1').replace(/^ERROR:?\s*/, '');
  if (path !== undefined) line = line.replace(`Could not open '${path}': `, '');
  return { line, more: Math.max(0, lines.length - 1) };
}

/** Guest-visible equality of two images (backing chains followed). */
export async function qemuImgCompare(
  first: string,
  second: string,
  options: QemuImgOptions & { strict?: boolean; firstFormat?: string; secondFormat?: string } = {},
): Promise<{ identical: boolean; message: string }> {
  const args = ['compare', ...(options.strict ? ['-s'] : [])];
  if (options.firstFormat) args.push('-f', options.firstFormat);
  if (options.secondFormat) args.push('-F', options.secondFormat);
  args.push(first, second);
  const { stdout, exitCode } = await run(args, { ...options, okExitCodes: [0, 1] });
  return { identical: exitCode === 0, message: stdout.trim() };
}

/** The allocation map of an image (`qemu-img map --output=json`), read while others may use it. */
export async function qemuImgMap(path: string, options: QemuImgOptions & { format?: string } = {}): Promise<MapExtent[]> {
  const args = ['map', '--output=json', '-U', ...(options.format ? ['-f', options.format] : []), path];
  const { stdout } = await run(args, options);
  const parsed = parseJson(stdout, args);
  if (!Array.isArray(parsed)) throw new BackupSetError('QEMU_IMG_FAILED', 'qemu-img map did not print a list');
  return parsed.map((entry: Record<string, unknown>) => ({
    start: Number(entry['start']),
    length: Number(entry['length']),
    depth: Number(entry['depth']),
    present: entry['present'] !== false,
    zero: entry['zero'] === true,
    data: entry['data'] === true,
    offset: typeof entry['offset'] === 'number' ? entry['offset'] : undefined,
  }));
}

function formatOptions(options: Record<string, string>): string {
  // qemu's option syntax escapes a comma by doubling it.
  return Object.entries(options)
    .map(([key, value]) => `${key}=${value.replaceAll(',', ',,')}`)
    .join(',');
}

/** Bytes of guest data stored in a qcow2 file itself (not in its backing files, not metadata). */
export async function qemuImgOwnDataBytes(path: string, options: QemuImgOptions = {}): Promise<number> {
  const extents = await qemuImgMap(path, { ...options, format: 'qcow2' });
  return extents.filter((extent) => extent.depth === 0 && extent.data).reduce((sum, extent) => sum + extent.length, 0);
}

/** Bytes of guest data an image and its backing chain hold (allocated and not reading as zeroes): what a full copy reads. */
export async function qemuImgDataBytes(path: string, format: string, options: QemuImgOptions = {}): Promise<number> {
  const extents = await qemuImgMap(path, { ...options, format });
  return extents.filter((extent) => extent.data && !extent.zero).reduce((sum, extent) => sum + extent.length, 0);
}

/** A persistent dirty bitmap stored in a qcow2 image, as `qemu-img info` lists it. */
export interface ImageBitmap {
  name: string;
  /** `auto`: recording (enabled); `in-use`: the image was not closed cleanly, so the bitmap is inconsistent. */
  flags: string[];
  granularity: number;
}

/** The persistent bitmaps of a qcow2 image (none for other formats). */
export async function qemuImgBitmaps(path: string, options: QemuImgOptions = {}): Promise<ImageBitmap[]> {
  const args = ['info', '--output=json', '-U', path];
  const { stdout } = await run(args, options);
  const info = parseJson(stdout, args) as { format?: string; 'format-specific'?: { data?: { bitmaps?: unknown } } };
  const bitmaps = info['format-specific']?.data?.bitmaps;
  if (!Array.isArray(bitmaps)) return [];
  return bitmaps.map((raw: Record<string, unknown>) => ({
    name: String(raw['name']),
    flags: Array.isArray(raw['flags']) ? raw['flags'].map(String) : [],
    granularity: Number(raw['granularity']),
  }));
}

/** Adds (recording) or removes a persistent bitmap of a qcow2 image no process has open (`qemu-img bitmap`). */
export async function qemuImgBitmap(path: string, action: 'add' | 'remove', name: string, options: QemuImgOptions = {}): Promise<void> {
  await run(['bitmap', `--${action}`, '-f', 'qcow2', path, name], options);
}
