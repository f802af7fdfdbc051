// When a fault strikes: a random delay after the command started, or a random
// delay after one of its JSON events. Delays are drawn from what clean runs of the
// same suite took, so faults spread over the whole run instead of its start-up.
import type { CliProcess } from '../cli-process.js';
import type { Rng } from '../seeded-random.js';

export type Trigger = { at: 'delay'; ms: number } | { at: 'event'; event: 'start' | 'progress' | 'disk-done'; thenMs: number };

/** Running estimates from the clean backups of the suite. */
export class RunTimings {
  /** From spawning the command to its exit. */
  totalMs = 1500;
  /** From its `start` event (the job is about to begin) to its exit. */
  jobMs = 500;

  learn(total: number, start: number | undefined): void {
    this.totalMs = Math.round(0.7 * this.totalMs + 0.3 * total);
    if (start !== undefined) this.jobMs = Math.round(0.7 * this.jobMs + 0.3 * (total - start));
  }
}

export function planTrigger(
  rng: Rng,
  timings: RunTimings,
  events: ReadonlyArray<'start' | 'progress' | 'disk-done'> = ['start', 'progress', 'disk-done'],
): Trigger {
  if (rng.chance(0.3)) return { at: 'delay', ms: rng.int(0, timings.totalMs) };
  return afterEvent(rng, timings, rng.pick(events));
}

/** A random delay after the command's first `event`: up to its whole job after `start`, up to 200 ms after the others. */
export function afterEvent(rng: Rng, timings: RunTimings, event: 'start' | 'progress' | 'disk-done'): Trigger {
  return { at: 'event', event, thenMs: event === 'start' ? rng.int(0, timings.jobMs) : rng.int(0, Math.min(200, timings.jobMs)) };
}

export function describeTrigger(trigger: Trigger): string {
  return trigger.at === 'delay' ? `${trigger.ms} ms after the start` : `${trigger.thenMs} ms after the first '${trigger.event}' event`;
}

/** Waits for the trigger; false if the command ended before it fired. */
export async function awaitTrigger(trigger: Trigger, cli: CliProcess): Promise<boolean> {
  if (trigger.at === 'event') {
    const seen = await cli.waitForEvent((event) => event.type === trigger.event);
    if (seen === null) return false;
  }
  const ms = trigger.at === 'delay' ? trigger.ms : trigger.thenMs;
  await Promise.race([new Promise((resolve) => setTimeout(resolve, ms)), cli.done]);
  return !cli.exited;
}
