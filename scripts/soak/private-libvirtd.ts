// A libvirtd (with its virtlogd) that only this soak uses, so that killing it hurts
// nobody else: the soak runs in a mount namespace of its own, where libvirt's
// runtime, state, config and image directories are bind mounts of directories under
// the work directory. Its daemons are stopped by the pids they wrote, never by name.
import { appendFile, cp, mkdir, readdir, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { run, tryRun } from '../../test/helpers/process.js';

/** libvirt's directories on the host, each replaced by a directory of ours. */
const SHADOWED = {
  run: '/run/libvirt',
  lib: '/var/lib/libvirt',
  cache: '/var/cache/libvirt',
  log: '/var/log/libvirt',
  etc: '/etc/libvirt',
} as const;

const START_TIMEOUT_MS = 30_000;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function pidFrom(file: string): Promise<number | null> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return /^\d+/.test(text.trim()) ? Number(text.trim()) : null;
}

/** True while `pid` exists and is not a zombie. */
async function running(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => null);
  return stat !== null && !/^\d+ \(.*\) Z/.test(stat);
}

async function commandOf(pid: number): Promise<string> {
  return (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0').join(' ');
}

/** The mount namespace the runner was started in, handed down to its copy under `unshare --mount`. */
export const OUTER_NAMESPACE_VARIABLE = 'LIBVIRT_BACKUP_SOAK_OUTER_NAMESPACE';

export async function currentMountNamespace(): Promise<string> {
  return readlink('/proc/self/ns/mnt');
}

async function assertOwnMountNamespace(): Promise<void> {
  const outer = process.env[OUTER_NAMESPACE_VARIABLE];
  if (outer === undefined || outer === (await currentMountNamespace())) {
    throw new Error("refusing to shadow libvirt's directories in the host's mount namespace; the faults suite re-runs itself under `unshare --mount`");
  }
}

export class PrivateLibvirtd {
  private constructor(readonly root: string) {}

  get libvirtdPidFile(): string {
    return join(this.root, 'libvirtd.pid');
  }

  get imageDir(): string {
    return '/var/lib/libvirt/images';
  }

  static async start(root: string): Promise<PrivateLibvirtd> {
    await assertOwnMountNamespace();
    for (const [name, target] of Object.entries(SHADOWED)) {
      await mkdir(join(root, name), { recursive: true });
      await mkdir(target, { recursive: true });
    }
    // Domains defined in the host's libvirtd are not ours to load (and that daemon
    // rewrites their files while we copy).
    await cp('/etc/libvirt', join(root, 'etc'), {
      recursive: true,
      filter: (source) => source !== '/etc/libvirt/qemu' && !source.startsWith('/etc/libvirt/qemu/'),
    });
    await mkdir(join(root, 'etc/qemu'), { recursive: true });
    await mkdir(join(root, 'lib/images'), { recursive: true });
    await writeFile(join(root, 'etc/libvirtd.conf'), 'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n');
    // QEMU in a mount namespace of its own would keep the soak's destination file system
    // mounted after the soak unmounts it to repair it, and would not see it mounted again.
    await appendFile(join(root, 'etc/qemu.conf'), '\nnamespaces = [ ]\n');
    for (const [name, target] of Object.entries(SHADOWED)) await run('mount', ['--bind', join(root, name), target]);
    const daemon = new PrivateLibvirtd(root);
    await run('virtlogd', ['-d', '-p', join(root, 'virtlogd.pid')]);
    await daemon.startLibvirtd();
    return daemon;
  }

  async startLibvirtd(): Promise<void> {
    await run('libvirtd', ['-d', '-p', this.libvirtdPidFile]);
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      const answer = await tryRun('virsh', ['-c', 'qemu:///system', 'version']);
      if (answer.code === 0) return;
      if (Date.now() > deadline) throw new Error(`the private libvirtd does not answer: ${answer.stderr.trim()}`);
      await sleep(100);
    }
  }

  /** SIGKILL, as a crash would; returns once the process is gone. */
  async kill(): Promise<void> {
    const pid = await pidFrom(this.libvirtdPidFile);
    if (pid === null || !(await running(pid))) throw new Error('the private libvirtd is not running');
    process.kill(pid, 'SIGKILL');
    while (await running(pid)) await sleep(10);
  }

  /** Destroys what the daemon still runs, then stops it and virtlogd. */
  async stop(): Promise<void> {
    const listed = await tryRun('virsh', ['-c', 'qemu:///system', 'list', '--name']);
    for (const name of listed.stdout
      .split('\n')
      .map((line) => line.trim())
      .filter(Boolean))
      await tryRun('virsh', ['-c', 'qemu:///system', 'destroy', name]);
    for (const file of [this.libvirtdPidFile, join(this.root, 'virtlogd.pid')]) {
      const pid = await pidFrom(file);
      if (pid === null || !(await running(pid))) continue;
      process.kill(pid, 'SIGTERM');
      const deadline = Date.now() + 10_000;
      while ((await running(pid)) && Date.now() < deadline) await sleep(20);
      if (await running(pid)) process.kill(pid, 'SIGKILL');
    }
  }
}

/** Written into a work directory its runner keeps for inspection. */
export const KEPT_MARK = 'kept-for-inspection';

/**
 * Work directories of earlier soak runs whose runner died (the directory names its pid)
 * are removed, unless the runner kept one on purpose; the daemons and QEMUs such a faults run started are stopped first, by the
 * pid files they left, after checking each pid is still what it was.
 */
export async function sweepStaleDaemons(workParent: string, say: (line: string) => void): Promise<void> {
  for (const entry of await readdir(workParent).catch(() => [])) {
    const owner = /^lvb-soak-(?:cycles|faults)-(\d+)-/.exec(entry);
    if (!owner || (await running(Number(owner[1])))) continue;
    const root = join(workParent, entry, 'daemon');
    const pidFiles = [join(root, 'libvirtd.pid'), join(root, 'virtlogd.pid')];
    for (const name of await readdir(join(root, 'run/qemu')).catch(() => [])) if (name.endsWith('.pid')) pidFiles.push(join(root, 'run/qemu', name));
    for (const file of pidFiles) {
      const pid = await pidFrom(file);
      if (pid === null || !(await running(pid))) continue;
      const command = await commandOf(pid);
      const ours = command.includes(root) || (file.includes('/run/qemu/') && command.includes('qemu-system'));
      if (!ours) continue;
      process.kill(pid, 'SIGKILL');
      say(`stopped pid ${pid} (${command.slice(0, 80)}) left by a soak run that died`);
    }
    // A directory its runner kept on purpose (a failure to look into) stays.
    const kept = await readFile(join(workParent, entry, KEPT_MARK), 'utf8').then(
      () => true,
      () => false,
    );
    if (!kept) await rm(join(workParent, entry), { recursive: true, force: true }).catch(() => undefined);
  }
}
