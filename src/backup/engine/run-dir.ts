import { chmod, mkdir, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BackupSetError } from '../errors.js';
import { describeFsError } from '../../common/fs-errors.js';
import { isPrivateDirectory } from '../set/file-lock.js';
import { ownerMayBeAlive } from '../set/process-liveness.js';
import { hostname } from 'node:os';

/**
 * The host-local directory for what a run needs only while it runs: per-domain run locks
 * and the NBD sockets that expose a VM's disks. Private (0700) because a socket there
 * hands out the guest's data to whoever can connect. `LIBVIRT_BACKUP_RUN_DIR` overrides.
 */
export function runDirPath(env: NodeJS.ProcessEnv = process.env): string {
  const override = env['LIBVIRT_BACKUP_RUN_DIR'];
  if (override) return override;
  const uid = process.getuid?.() ?? 0;
  if (uid === 0) return '/run/libvirt-backup';
  const runtime = env['XDG_RUNTIME_DIR'];
  return runtime ? join(runtime, 'libvirt-backup') : join(tmpdir(), `libvirt-backup-${uid}`);
}

export async function ensureRunDir(): Promise<string> {
  const dir = runDirPath();
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    if (!(await isPrivateDirectory(dir))) await chmod(dir, 0o700);
  } catch (error) {
    throw new BackupSetError('SET_IO', `cannot create the run directory ${dir}: ${describeFsError(error)}`, { path: dir, cause: error });
  }
  if (!(await isPrivateDirectory(dir))) {
    throw new BackupSetError('SET_IO', `the run directory ${dir} is not a private directory of this user; remove it or set LIBVIRT_BACKUP_RUN_DIR`, {
      path: dir,
    });
  }
  return dir;
}

const SOCKET_DIR = /^nbd-(\d+)-[A-Za-z0-9]+$/;

/** The prefix of a run's socket directory; the pid in it lets the next run sweep dead ones. */
export function socketDirPrefix(runDir: string): string {
  return join(runDir, `nbd-${process.pid}-`);
}

export function isSocketDirOfRunDir(path: string, runDir: string): boolean {
  return path.startsWith(`${runDir}/nbd-`);
}

/** Removes socket directories of runs that died (SIGKILL leaves them); returns their names. */
export async function sweepDeadSocketDirs(runDir: string): Promise<string[]> {
  const removed: string[] = [];
  for (const entry of await readdir(runDir).catch(() => [] as string[])) {
    const match = SOCKET_DIR.exec(entry);
    if (!match) continue;
    const pid = Number(match[1]);
    if (ownerMayBeAlive({ pid, hostname: hostname(), startedAt: '' })) continue;
    await rm(join(runDir, entry), { recursive: true, force: true });
    removed.push(entry);
  }
  return removed;
}
