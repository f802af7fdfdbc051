// CPU time from /proc: of a whole process (the daemon, the proxy, a guest's QEMU) and
// thread by thread, a figure that bounds a throughput when one thread (a daemon's event
// loop, QEMU's NBD server) does its work alone.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/** /proc counts CPU time in USER_HZ ticks, which Linux fixes at 100 a second whatever the kernel's own HZ. */
const TICKS_PER_SECOND = 100;

/** The fields of a /proc stat file after the command name, from the state on (field 3). */
function statFields(path: string): string[] {
  const stat = readFileSync(path, 'utf8');
  // The command name may hold spaces and parentheses: the fields start after the last ')'.
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** User plus system CPU seconds from a /proc stat file (of a process or of one of its threads). */
function cpuSecondsOfStat(path: string): number {
  const fields = statFields(path);
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
}

/** CPU seconds the process `pid` has used so far, all its threads (those that ended too). */
export function processCpuSeconds(pid: number | string): number {
  return cpuSecondsOfStat(`/proc/${pid}/stat`);
}

/** Minor page faults the process `pid` has taken so far: a server that maps fresh memory per request shows here. */
export function processMinorFaults(pid: number | string): number {
  return Number(statFields(`/proc/${pid}/stat`)[7]);
}

/** CPU seconds of this process and of the children it has waited for (a peer's command-line client). */
export function clientCpuSeconds(): number {
  const fields = statFields('/proc/self/stat');
  // utime, stime, cutime, cstime
  return fields.slice(11, 15).reduce((sum, ticks) => sum + Number(ticks), 0) / TICKS_PER_SECOND;
}

/** CPU seconds of each thread of a process, by thread id (threads that ended are gone). */
export function threadCpu(pid: number | string | 'self'): Map<string, number> {
  const seconds = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      seconds.set(tid, cpuSecondsOfStat(`/proc/${pid}/task/${tid}/stat`));
    } catch {
      // The thread ended meanwhile.
    }
  }
  return seconds;
}

/** CPU seconds of the thread that used most between two `threadCpu` readings. */
export function busiestThread(before: Map<string, number>, now: Map<string, number>): number {
  return Math.max(0, ...[...now].map(([tid, cpu]) => cpu - (before.get(tid) ?? 0)));
}

/** Busy and total CPU ticks of the whole machine so far (/proc/stat): their differences say how busy the cores were. */
export function machineTicks(): { busy: number; total: number } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = fields.reduce((sum, ticks) => sum + ticks, 0);
  // idle and iowait are the time no one wanted the cores
  return { busy: total - fields[3]! - fields[4]!, total };
}

/** The share of the machine's cores that was busy between two `machineTicks` readings. */
export function busyShare(before: { busy: number; total: number }, after: { busy: number; total: number }): number {
  return (after.busy - before.busy) / Math.max(1, after.total - before.total);
}

/** The pid of the first of `names` that runs (a modular daemon, or the monolithic libvirtd). */
export function daemonPid(names: readonly string[]): string {
  for (const name of names) {
    try {
      return execFileSync('pgrep', ['-o', '-x', name], { encoding: 'utf8' }).trim();
    } catch {
      // not running under this name
    }
  }
  throw new Error(`none of ${names.join(', ')} is running`);
}
