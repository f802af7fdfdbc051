import type { CommandOutput } from '../output.js';

/** What every command gets from main: where to report, and the abort of SIGINT/SIGTERM. */
export interface CommandContext {
  output: CommandOutput;
  signal: AbortSignal;
}
