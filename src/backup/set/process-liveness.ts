import { hostname } from 'node:os';

/** Who is doing something to a set: enough to tell whether that someone is still alive. */
export interface ProcessOwner {
  pid: number;
  hostname: string;
  startedAt: string;
}

export function currentOwner(): ProcessOwner {
  return { pid: process.pid, hostname: hostname(), startedAt: new Date().toISOString() };
}

/**
 * True when the owner may still be running. A process on another host cannot be checked,
 * so it counts as alive: wrongly assuming a live process dead could destroy its work.
 */
export function ownerMayBeAlive(owner: ProcessOwner): boolean {
  if (owner.hostname !== hostname()) return true;
  if (owner.pid === process.pid) return true;
  try {
    process.kill(owner.pid, 0);
    return true;
  } catch (error) {
    // EPERM: the process exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

export function describeOwner(owner: ProcessOwner): string {
  const self = owner.pid === process.pid && owner.hostname === hostname() ? ' (this process)' : '';
  return `pid ${owner.pid} on ${owner.hostname}${self}, since ${owner.startedAt}`;
}

export function parseOwner(value: unknown): ProcessOwner | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const { pid, hostname: host, startedAt } = value as Record<string, unknown>;
  if (typeof pid !== 'number' || !Number.isSafeInteger(pid) || pid <= 0) return undefined;
  if (typeof host !== 'string' || typeof startedAt !== 'string') return undefined;
  return { pid, hostname: host, startedAt };
}
