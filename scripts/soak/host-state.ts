// What a backup run may leave behind outside the set: a libvirt job, checkpoints,
// sockets and temporary files, processes. Read with tools the product did not write
// (virsh, /proc), so the product's own bookkeeping cannot hide a leftover.
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';

import { run, tryRun } from '../../test/helpers/process.js';

/**
 * libvirt's job on the domain: 'None' when there is none. libvirt fails job queries
 * while a backup job starts or ends ("backup job data missing"): asked again a few
 * times, then the failure is the answer, for the check to report (never a crash).
 */
export async function domainJob(uri: string, domain: string): Promise<string> {
  let failure = '';
  for (let attempt = 0; attempt < 5; attempt += 1) {
    const result = await tryRun('virsh', ['-c', uri, 'domjobinfo', domain]);
    if (result.code === 0) return /Job type:\s*(\S+)/.exec(result.stdout)?.[1] ?? `unreadable: ${result.stdout.trim()}`;
    failure = result.stderr.trim();
    await new Promise((resolve) => setTimeout(resolve, 200 * (attempt + 1)));
  }
  return `unreadable: ${failure}`;
}

export async function domainCheckpoints(uri: string, domain: string): Promise<string[]> {
  const out = await run('virsh', ['-c', uri, 'checkpoint-list', domain, '--name']);
  return out
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '');
}

/** Every entry under `dir` (not following links), as paths relative to it. */
export async function entriesUnder(dir: string): Promise<Array<{ path: string; kind: 'dir' | 'socket' | 'file' | 'other' }>> {
  const found: Array<{ path: string; kind: 'dir' | 'socket' | 'file' | 'other' }> = [];
  const walk = async (relative: string) => {
    let names: string[];
    try {
      names = await readdir(join(dir, relative));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw error;
    }
    for (const name of names.sort()) {
      const path = relative === '' ? name : `${relative}/${name}`;
      const info = await lstat(join(dir, path)).catch(() => undefined);
      if (!info) continue;
      const kind = info.isDirectory() ? 'dir' : info.isSocket() ? 'socket' : info.isFile() ? 'file' : 'other';
      found.push({ path, kind });
      if (kind === 'dir') await walk(path);
    }
  };
  await walk('');
  return found;
}

export interface ProcessUse {
  pid: number;
  command: string;
  /** What ties it to the soak's directories: its arguments, or a file it has open. */
  by: 'arguments' | 'open-file';
  why: string;
}

/**
 * Processes other than this one whose command line names one of `paths`, or that hold
 * a file under one of them open (QEMU still writing a push target, a qemu-img of a
 * killed run).
 */
export async function processesUsing(paths: readonly string[], exclude: readonly number[] = []): Promise<ProcessUse[]> {
  const uses: ProcessUse[] = [];
  const skip = new Set([process.pid, ...exclude]);
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (skip.has(pid)) continue;
    let command: string;
    try {
      command = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').join(' ').trim();
    } catch {
      continue;
    }
    if (command === '') continue;
    const named = paths.find((path) => command.includes(path));
    if (named !== undefined) {
      uses.push({ pid, command: command.slice(0, 300), by: 'arguments', why: `its arguments name ${named}` });
      continue;
    }
    let fds: string[];
    try {
      fds = await readdir(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
      const held = paths.find((path) => target.startsWith(`${path}/`));
      if (held !== undefined) {
        uses.push({ pid, command: command.slice(0, 300), by: 'open-file', why: `it holds ${target} open (fd ${fd})` });
        break;
      }
    }
  }
  return uses;
}
