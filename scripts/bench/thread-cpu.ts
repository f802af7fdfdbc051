// Where a process's CPU went, thread by thread: a figure that bounds a throughput
// when one thread (a daemon's event loop, QEMU's NBD server) does its work alone.
import { readdirSync } from 'node:fs';

import { cpuSecondsOfStat } from './settled-guests.js';

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
