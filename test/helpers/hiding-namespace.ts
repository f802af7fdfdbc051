// Runs a command as if on another host than the hypervisor: in a mount namespace of its
// own (`unshare -m`) where libvirt's sockets, state and images and the temp directories
// are empty tmpfs mounts. A code path that takes a local shortcut (the unix socket, an
// image file, a socket in a shared /tmp) fails there; the network (127.0.0.1) is shared.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import { toolEnvironment } from './process.js';

/** What a remote client must not see of the hypervisor's host. */
export const HIDDEN_PATHS = ['/run/libvirt', '/var/run/libvirt', '/var/lib/libvirt', '/var/lib/libvirt/images', '/tmp', '/var/tmp'] as const;

export interface HiddenRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

// The package's own tree stays visible wherever it lies (a clone under /tmp is common):
// a client host has the program it runs. It is bound aside on a private tmpfs first,
// then bound back over its place once the paths are hidden.
const PACKAGE_ROOT = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');

// Each path gets an empty tmpfs (created inside the previous one when it is hidden
// already); then, as a proof, the local libvirt socket must be gone. The mounts below a
// path are let go of first: the namespace's copy of another test's file system (a loop
// mount under /tmp) would keep it alive after that test unmounts it, and its next mount
// would get the old, broken one back instead of the repaired image.
const SCRIPT = `set -e
keep="$1"; shift
aside=$(mktemp -d /dev/shm/lvb-keep.XXXXXX)
mount --bind "$keep" "$aside"
for dir in "$@"; do
  [ "$dir" = -- ] && break
  findmnt -rn -o TARGET | awk -v below="$dir/" 'index($0, below) == 1' | sort -r | while read -r inner; do umount -l "$inner" || true; done
  mkdir -p "$dir"
  mount -t tmpfs -o size=256m,mode=1777 lvb-hidden "$dir"
done
mkdir -p "$keep"
mount --bind "$aside" "$keep"
umount -l "$aside"
rmdir "$aside" 2>/dev/null || true
while [ "$1" != -- ]; do shift; done
shift
if [ -e /run/libvirt/libvirt-sock ] || [ -n "$(ls -A /var/lib/libvirt/images 2>/dev/null)" ]; then
  echo "hiding-namespace: the hypervisor's files are still visible" >&2
  exit 97
fi
exec "$@"`;

export interface HiddenProcess {
  child: ChildProcess;
  /** Resolves with the first stdout line `predicate` accepts; rejects if the command ends first. */
  waitForLine(predicate: (line: string) => boolean): Promise<string>;
  done: Promise<HiddenRun>;
}

/**
 * Starts `command` with `hidden` paths behind empty tmpfs mounts; the host's mounts are
 * untouched. `unshare` and the shell exec the command, so `child` is the command itself.
 */
export function startHidden(command: readonly string[], options: { env?: NodeJS.ProcessEnv; hidden?: readonly string[]; cwd?: string } = {}): HiddenProcess {
  const hidden = options.hidden ?? HIDDEN_PATHS;
  const child = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', SCRIPT, 'sh', PACKAGE_ROOT, ...hidden, '--', ...command], {
    env: { ...toolEnvironment(), ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
  });
  let stdout = '';
  let stderr = '';
  let pending = '';
  const waiters: Array<{ predicate: (line: string) => boolean; resolve: (line: string) => void }> = [];
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    pending += chunk;
    const lines = pending.split('\n');
    pending = lines.pop()!;
    for (const line of lines) {
      for (const waiter of [...waiters]) {
        if (!waiter.predicate(line)) continue;
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(line);
      }
    }
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const done = new Promise<HiddenRun>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return {
    child,
    done,
    waitForLine: (predicate) =>
      new Promise<string>((resolve, reject) => {
        waiters.push({ predicate, resolve });
        void done.then(() => reject(new Error(`the command ended before the expected line; stdout:\n${stdout}\nstderr:\n${stderr}`)));
      }),
  };
}

/** Runs `command` to its end with `hidden` paths behind empty tmpfs mounts. */
export function runHidden(command: readonly string[], options: { env?: NodeJS.ProcessEnv; hidden?: readonly string[]; cwd?: string } = {}): Promise<HiddenRun> {
  return startHidden(command, options).done;
}
