// How the process runs blocking libvirt calls: on the addon's own threads, which
// (like the JS thread while calls are in flight) poll briefly for work before
// sleeping. See binding/call_dispatcher.cc for why.
import { nativeAddon } from './native.js';

/** How the addon runs libvirt calls: how many at once, and how long a call thread spins before it sleeps. */
export interface CallTuning {
  /**
   * Most libvirt calls that run at once in this process (default 16). Threads
   * start on demand; lowering the limit does not stop threads already started.
   */
  maxThreads: number;
  /**
   * The longest an idle call thread, and the JS thread while calls are in flight,
   * poll before they sleep (default 200). Polling saves the thread wake-ups that
   * otherwise dominate short calls. Each thread polls only while it pays: a poll
   * that runs out shortens the next, and polling stops for a while when another
   * process takes the core (a busy host). 0 never polls, for the least CPU use at
   * the cost of per-call latency.
   */
  busyPollMicroseconds: number;
}

const LIMITS: Record<keyof CallTuning, [min: number, max: number]> = {
  maxThreads: [1, 256],
  busyPollMicroseconds: [0, 1_000_000],
};

/** The settings in force. */
export function getCallTuning(): CallTuning {
  return nativeAddon().getCallTuning();
}

/** Changes the given settings for the whole process and returns the settings now in force. */
export function configureCalls(tuning: Partial<CallTuning>): CallTuning {
  if (typeof tuning !== 'object' || tuning === null) {
    throw new TypeError('configureCalls: the argument must be an object like { maxThreads, busyPollMicroseconds }');
  }
  for (const key of Object.keys(tuning)) {
    if (!(key in LIMITS)) throw new TypeError(`configureCalls: unknown setting "${key}"`);
    const value = tuning[key as keyof CallTuning];
    if (value === undefined) continue;
    const [min, max] = LIMITS[key as keyof CallTuning];
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new RangeError(`configureCalls: ${key} must be an integer from ${min} to ${max}, got ${String(value)}`);
    }
  }
  return nativeAddon().setCallTuning(tuning);
}
