// What the suites share to run a command and time a step the same way.
import { execFileSync } from 'node:child_process';
import { performance } from 'node:perf_hooks';

/** Runs a command and returns what it printed; a failure throws with its stderr. */
export function sh(command: string, args: string[]): string {
  return execFileSync(command, args, { encoding: 'utf8', maxBuffer: 64 * 2 ** 20, stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * Each timed step starts with no dirty pages left by the previous one: the kernel's
 * write-back of an earlier step would otherwise throttle the next.
 */
export function settle(): void {
  execFileSync('sync');
}

export function timed<T>(fn: () => T): { value: T; seconds: number } {
  settle();
  const start = performance.now();
  const value = fn();
  return { value, seconds: (performance.now() - start) / 1000 };
}

export async function timedAsync<T>(fn: () => Promise<T>): Promise<{ value: T; seconds: number }> {
  settle();
  const start = performance.now();
  const value = await fn();
  return { value, seconds: (performance.now() - start) / 1000 };
}

/** The middle value (the upper one of an even count). */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}
