// Temporary names of restore outputs. A restore writes `.<output>.partial-<host>-<pid>-<random>`
// and renames it when done; a restore that is killed (SIGKILL, a crash, a power cut)
// cannot remove it, so the next restore into the same directory removes the partial
// files whose owner is certainly gone.
import { randomBytes } from 'node:crypto';
import { readdir, stat, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { errnoCode } from '../../common/fs-errors.js';
import { ownerMayBeAlive } from '../set/process-liveness.js';

const PARTIAL_NAME = /^\.(.+)\.partial-(.+)-(\d+)-([0-9a-f]{8})$/;
/** Written by versions before partial names carried their owner. */
const OWNERLESS_PARTIAL_NAME = /^\.(.+)\.partial-([0-9a-f]{8})$/;

function hostLabel(): string {
  return hostname() || 'localhost';
}

/** A fresh temporary path next to `output`, naming this process as its owner. */
export function partialPathFor(output: string): string {
  return join(dirname(output), `.${basename(output)}.partial-${hostLabel()}-${process.pid}-${randomBytes(4).toString('hex')}`);
}

export interface AbandonedPartial {
  path: string;
  /** The output it was going to become. */
  output: string;
  pid: number;
  bytes: number;
}

export interface PartialSweep {
  removed: AbandonedPartial[];
  /** Partial files of an older version: their owner cannot be told, so they stay. */
  ownerless: string[];
}

/**
 * Removes the partial outputs in `directory` whose owner process on this host has
 * exited. Partials of live processes, of other hosts (a shared file system) and of
 * unknown owners are left alone: removing a live restore's file would break it.
 */
export async function removeAbandonedPartials(directory: string): Promise<PartialSweep> {
  const sweep: PartialSweep = { removed: [], ownerless: [] };
  let names: string[];
  try {
    names = await readdir(directory);
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return sweep;
    throw error;
  }
  for (const name of names) {
    const match = PARTIAL_NAME.exec(name);
    if (match === null) {
      if (OWNERLESS_PARTIAL_NAME.test(name)) sweep.ownerless.push(join(directory, name));
      continue;
    }
    const [, output, host, pidText] = match;
    const pid = Number(pidText);
    if (!Number.isSafeInteger(pid) || pid <= 0) continue;
    if (ownerMayBeAlive({ pid, hostname: host!, startedAt: '' })) continue;
    const path = join(directory, name);
    const bytes = await stat(path).then(
      (info) => (info.isFile() ? info.blocks * 512 : -1),
      () => -1,
    );
    if (bytes < 0) continue;
    try {
      await unlink(path);
    } catch (error) {
      if (errnoCode(error) === 'ENOENT') continue; // another restore swept it first
      throw error;
    }
    sweep.removed.push({ path, output: join(directory, output!), pid, bytes });
  }
  return sweep;
}
