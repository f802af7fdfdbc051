// The pull copy's thread: holds a run's export connections and copies them into the
// backup files, so that the thread of the service that runs the backup only hears how
// far it is (README, "A service's event loop").
import { parentPort } from 'node:worker_threads';

import type { NbdClient } from '../../nbd/index.js';
import { sendError } from './copy-thread-errors.js';
import { copyExport, openExport, type ExportPlan } from './export-copy.js';
import { DATA_REPORT_INTERVAL_MS, type FromCopyThread, type ToCopyThread } from './pull-copy-messages.js';

const port = parentPort;
if (port === null) throw new Error('pull-copy-worker runs as a worker thread');

const exports = new Map<number, { source: NbdClient; plan: ExportPlan }>();
const running = new Map<number, AbortController>();

const post = (message: FromCopyThread) => port.postMessage(message);

async function handle(message: Exclude<ToCopyThread, { type: 'abort' }>, signal: AbortSignal): Promise<unknown> {
  switch (message.type) {
    case 'open': {
      const opened = await openExport(message.spec, signal);
      exports.set(message.exportId, opened);
      return opened.plan;
    }
    case 'copy': {
      const opened = exports.get(message.exportId);
      if (opened === undefined) throw new Error(`export ${message.exportId} is not open`);
      let reported = 0;
      return copyExport(
        opened.source,
        opened.plan,
        message.target,
        (bytesRead) => {
          const now = Date.now();
          if (now - reported < DATA_REPORT_INTERVAL_MS) return;
          reported = now;
          post({ type: 'data', exportId: message.exportId, bytesRead });
        },
        signal,
      );
    }
    case 'close': {
      const opened = exports.get(message.exportId);
      exports.delete(message.exportId);
      await opened?.source.close();
      return undefined;
    }
  }
}

port.on('message', (message: ToCopyThread) => {
  if (message.type === 'abort') {
    running.get(message.request)?.abort(new Error('aborted by the run'));
    return;
  }
  const controller = new AbortController();
  running.set(message.request, controller);
  handle(message, controller.signal)
    .then(
      (value) => post({ type: 'reply', request: message.request, value }),
      (error: unknown) => post({ type: 'reply', request: message.request, error: sendError(error) }),
    )
    .finally(() => running.delete(message.request));
});
