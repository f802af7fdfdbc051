// process.exit() with a bound on how long exiting may take once libvirt is loaded.
// Exiting runs the atexit handlers and the libraries' destructors while the addon's
// threads (libvirt's event loop, the call threads, the release thread) still run; if
// one of them holds up the exit, a script that has done its work would wait forever,
// and a nightly job would find the next night's run blocked by it.
import { nativeAddonIfLoaded } from './native.js';

/** How long `exitProcess()` lets the exit take by default. */
export const DEFAULT_EXIT_GRACE_MS = 30_000;

/** How `exitProcess()` bounds the exit. */
export interface ExitProcessOptions {
  /** How long the exit may take before the process is ended with `_exit(code)`; 0: no bound. Default 30 s. */
  graceMs?: number;
}

/**
 * Ends the process with `code`, as `process.exit(code)` does ('exit' listeners run,
 * standard output and error are flushed as Node flushes them). If the addon is loaded
 * and the exit has not completed within `graceMs`, a native thread writes one line to
 * standard error and ends the process with `_exit(code)`, skipping what was left.
 */
export function exitProcess(code: number, options: ExitProcessOptions = {}): never {
  if (!Number.isInteger(code) || code < 0 || code > 255) throw new TypeError(`code must be an exit code (an integer 0-255), got ${String(code)}`);
  const graceMs = options.graceMs ?? DEFAULT_EXIT_GRACE_MS;
  if (typeof graceMs !== 'number' || !Number.isInteger(graceMs) || graceMs < 0) {
    throw new TypeError(`options.graceMs must be a whole number of milliseconds >= 0 (0: no bound), got ${String(graceMs)}`);
  }
  if (graceMs > 0) nativeAddonIfLoaded()?.armExitWatchdog(code, graceMs);
  return process.exit(code);
}
