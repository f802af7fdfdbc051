// The pull copy thread as the run uses it: a thread that ends under a copy fails the
// copy with a clear error instead of leaving the run waiting, nothing is asked of it
// afterwards, and a stopped thread is gone from the process.
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

import test from 'ava';

import { nativeAddon } from '../../src/libvirt/native.js';
import { PullCopyThread } from '../../src/backup/engine/pull-copy-thread.js';
import { exportedDisk } from './exported-disk.js';

test.serial('a thread that ends under a copy fails the copy and every later call', async (t) => {
  const { dir, exports } = await exportedDisk(t, 'lvb-copy-thread-', '512M', '384M');

  // The addon's own threads live as long as the process: loaded here first, they are
  // counted before the copy thread loads it too.
  nativeAddon();
  const threadsBefore = threadCount();
  const thread = new PullCopyThread();
  const opened = await thread.open(
    { endpoint: exports.exportOf('vda'), exportName: 'vda', dirtyBitmap: undefined, backingFile: null },
    new AbortController().signal,
  );
  t.is(opened.plan.virtualSize, 512 * 2 ** 20);
  t.is(opened.plan.scratchBound, 384 * 2 ** 20);
  let ended: Promise<void> | undefined;
  const copy = opened.copy(
    { path: join(dir, 'copy.qcow2'), backingFile: null, compression: undefined },
    () => {
      ended ??= thread.stop();
    },
    new AbortController().signal,
  );
  const error = await t.throwsAsync(copy);
  t.regex(error.message, /the pull copy thread ended/);
  await ended;
  await t.throwsAsync(
    thread.open({ endpoint: exports.exportOf('vda'), exportName: 'vda', dirtyBitmap: undefined, backingFile: null }, new AbortController().signal),
    {
      message: /the pull copy thread ended/,
    },
  );
  await opened.close();
  t.is(threadCount(), threadsBefore, 'the thread is gone from the process');
});

function threadCount(): number {
  return readdirSync('/proc/self/task').length;
}

const NO_EXPORT = { endpoint: { path: '/nonexistent/export.sock' }, exportName: 'vda', dirtyBitmap: undefined, backingFile: null };

test.serial('a thread released sound and idle serves the next run; one released with an export open is ended', async (t) => {
  const first = PullCopyThread.acquire();
  // It answers (the export is missing), so it is up.
  await t.throwsAsync(first.open(NO_EXPORT, new AbortController().signal), { code: 'ENOENT' });
  await first.release();
  const second = PullCopyThread.acquire();
  t.is(second, first);
  await t.throwsAsync(second.open(NO_EXPORT, new AbortController().signal), { code: 'ENOENT' });

  const { exports } = await exportedDisk(t, 'lvb-copy-thread-', '16M');
  await second.open({ ...NO_EXPORT, endpoint: exports.exportOf('vda') }, new AbortController().signal);
  await second.release();
  const third = PullCopyThread.acquire();
  t.not(third, second);
  await t.throwsAsync(second.open(NO_EXPORT, new AbortController().signal), { message: /the pull copy thread ended/ });
  await third.stop();
});

test.serial('a kept thread never keeps the process alive', (t) => {
  const script = `
    const { PullCopyThread } = await import(${JSON.stringify(new URL('../../src/backup/engine/pull-copy-thread.ts', import.meta.url).href)});
    PullCopyThread.prewarm();
    const thread = PullCopyThread.acquire();
    await thread.release();
    console.log('released');
  `;
  const started = Date.now();
  const out = execFileSync(process.execPath, ['--import=tsx', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
  t.is(out.trim(), 'released');
  t.true(Date.now() - started < 15_000, 'the process ended without waiting for the kept thread to expire');
});
