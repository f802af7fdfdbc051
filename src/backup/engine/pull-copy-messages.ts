// The messages between a run and its pull copy thread (pull-copy-thread.ts, pull-copy-worker.ts).
import type { SentError } from './copy-thread-errors.js';
import type { CopyTarget, ExportRequest } from './export-copy.js';

/** The run asks; every request but `abort` gets one `reply` with its number. */
export type ToCopyThread =
  | { type: 'open'; request: number; exportId: number; spec: ExportRequest }
  | { type: 'copy'; request: number; exportId: number; target: CopyTarget }
  | { type: 'close'; request: number; exportId: number }
  /** Ends the request numbered `request` early; its reply still comes once it has stopped. */
  | { type: 'abort'; request: number };

export type FromCopyThread =
  | { type: 'reply'; request: number; value?: unknown; error?: SentError }
  /** Data bytes a copy has read so far: what its file has received. */
  | { type: 'data'; exportId: number; bytesRead: number };

/** How often, at most, a copy tells the run how far it is: the space guard and progress read it. */
export const DATA_REPORT_INTERVAL_MS = 50;
