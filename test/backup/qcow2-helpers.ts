// Images made by QEMU's own tools for the reader and restore tests, and a restore of
// such a chain without a backup set around it.
import { execFile } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { restoreChain, type ChainFile, type ChainRestoreOptions, type ChainRestoreReport } from '../../src/backup/restore/chain-restore.js';
import { checksumFile } from '../../src/backup/checksum.js';

const exec = promisify(execFile);

export const KiB = 1024;
export const MiB = 1024 * KiB;

export async function qemuImg(...args: string[]): Promise<string> {
  return (await exec('qemu-img', args, { maxBuffer: 64 * MiB })).stdout;
}

/** Runs several qemu-io commands (`write -P 0x11 0 64k`, `write -z ...`, `discard ...`) in one process. */
export async function qemuIo(path: string, commands: readonly string[], format = 'qcow2'): Promise<void> {
  if (commands.length === 0) return;
  await exec('qemu-io', ['-f', format, ...commands.flatMap((command) => ['-c', command]), path], { maxBuffer: 64 * MiB });
}

export interface ImageSpec {
  path: string;
  size: number;
  backing?: string;
  /** `-o` options: cluster_size, compat, ... */
  options?: Record<string, string>;
}

export async function createImage({ path, size, backing, options = {} }: ImageSpec): Promise<void> {
  const args = ['create', '-q', '-f', 'qcow2'];
  if (backing !== undefined) args.push('-b', basename(backing), '-F', 'qcow2');
  const joined = Object.entries(options).map(([key, value]) => `${key}=${value}`);
  if (joined.length > 0) args.push('-o', joined.join(','));
  args.push(path, String(size));
  await qemuImg(...args);
}

/** The manifest's view of a chain of qcow2 files (base first), read from the files themselves. */
export async function describeChain(paths: readonly string[]): Promise<ChainFile[]> {
  const files: ChainFile[] = [];
  for (const [index, path] of paths.entries()) {
    const info = JSON.parse(await qemuImg('info', '--output=json', '-U', path)) as { 'virtual-size': number };
    files.push({
      name: basename(path),
      path,
      checksum: await checksumFile(path),
      size: (await stat(path)).size,
      backingFile: index === 0 ? null : basename(paths[index - 1]!),
      virtualSize: info['virtual-size'],
    });
  }
  return files;
}

export async function restorePaths(paths: readonly string[], output: string, options: ChainRestoreOptions): Promise<ChainRestoreReport> {
  return restoreChain(await describeChain(paths), output, options);
}

/** What qemu-img makes of the chain whose top is `top`, as raw bytes. */
export async function qemuImgRaw(top: string, dir: string): Promise<Buffer> {
  const output = join(dir, `${basename(top)}.reference.raw`);
  await qemuImg('convert', '-f', 'qcow2', '-O', 'raw', top, output);
  return readFile(output);
}

/** Guest-visible equality, judged by qemu-img. */
export async function qemuImgCompare(first: string, second: string): Promise<{ identical: boolean; message: string }> {
  try {
    const { stdout } = await exec('qemu-img', ['compare', first, second]);
    return { identical: true, message: stdout.trim() };
  } catch (error) {
    return { identical: false, message: String((error as { stdout?: string }).stdout ?? error) };
  }
}

export async function qemuImgCheckClean(path: string): Promise<{ clean: boolean; report: string }> {
  try {
    const { stdout } = await exec('qemu-img', ['check', '--output=json', path]);
    return { clean: true, report: stdout };
  } catch (error) {
    return { clean: false, report: String((error as { stdout?: string }).stdout ?? error) };
  }
}

export async function imageInfo(path: string): Promise<Record<string, unknown>> {
  return JSON.parse(await qemuImg('info', '--output=json', '-U', path)) as Record<string, unknown>;
}

/** fc.assert, with the failing case's own error in the message (fast-check keeps it as the cause, which ava does not print). */
export async function assertProperty<T>(property: fc.IAsyncProperty<T>, parameters: fc.Parameters<T>): Promise<void> {
  try {
    await fc.assert(property, parameters);
  } catch (error) {
    const cause = error instanceof Error ? error.cause : undefined;
    if (cause === undefined) throw error;
    throw new Error(`${(error as Error).message}\ncaused by: ${cause instanceof Error ? (cause.stack ?? cause.message) : String(cause)}`, { cause: error });
  }
}
