// A child process that must not outlive this one (a qemu-img convert, a qemu-nbd export).
import { accessSync, constants as fsConstants } from 'node:fs';
import { join } from 'node:path';

let setprivPath: string | null | undefined;

/** util-linux's setpriv, if installed: it can set the parent-death signal Node cannot. */
function setpriv(): string | null {
  if (setprivPath === undefined) {
    setprivPath = null;
    for (const directory of (process.env['PATH'] ?? '/usr/bin:/bin').split(':')) {
      const candidate = join(directory || '.', 'setpriv');
      try {
        accessSync(candidate, fsConstants.X_OK);
        setprivPath = candidate;
        break;
      } catch {
        // not here
      }
    }
  }
  return setprivPath;
}

/**
 * The command and arguments to spawn so that the child is killed when this process dies,
 * even by SIGKILL: setpriv sets PR_SET_PDEATHSIG and execs the command in the same
 * process, so killing the child still kills the command. Without setpriv, unchanged.
 */
export function dieWithParent(command: string, args: readonly string[]): [string, string[]] {
  const wrapper = setpriv();
  return wrapper === null ? [command, [...args]] : [wrapper, ['--pdeathsig', 'KILL', '--', command, ...args]];
}
