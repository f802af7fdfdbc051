// The pull copy of several disks: each disk's export is closed (and its client let go,
// with the receive memory it keeps) as soon as that disk is copied, not when the last is.
// The exports are qemu-nbd's, as for a shut-off domain; qemu-img judges the files.
import { statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import test, { type ExecutionContext } from 'ava';

import { OfflineExports } from '../../src/backup/engine/offline-images.js';
import { closeExports, copyDisks, openOfflineExports } from '../../src/backup/engine/pull-transfer.js';
import { PullCopyThread } from '../../src/backup/engine/pull-copy-thread.js';
import type { DiskPlan, ExecuteContext } from '../../src/backup/engine/run-context.js';
import { BackupError, type BackupEvent } from '../../src/backup/engine/engine-types.js';
import { BackupSet } from '../../src/backup/set/backup-set.js';
import { imagesIdentical } from './engine-helpers.js';
import { qemuImg, qemuIo } from './qcow2-helpers.js';
import { exportedDisk } from './exported-disk.js';

const DOMAIN = { name: 'pull-transfer', uuid: '5d0c8a47-2f61-4b1e-9a3c-0e7b6f1d2c84', xml: '<domain type="kvm"><name>pull-transfer</name></domain>' };

test('with one disk at a time, a disk’s export is closed before the next disk is read, and every file equals its disk', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'lvb-pull-transfer-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const targets = ['vda', 'vdb', 'vdc'];
  const images = new Map(targets.map((target) => [target, { target, path: join(dir, `${target}.qcow2`), format: 'qcow2' }]));
  for (const [i, image] of [...images.values()].entries()) {
    await qemuImg('create', '-q', '-f', 'qcow2', image.path, '16M');
    await qemuIo(image.path, [`write -P 0x${(0x21 + i).toString(16)} 0 3M`, `write -P 0x7e 9M 64k`]);
  }
  const disks: DiskPlan[] = targets.map((target) => ({
    target,
    format: 'qcow2',
    tracksChanges: true,
    level: 'full',
    file: `${target}.full.qcow2`,
    backingFile: null,
    virtualSize: 0,
    dataBytes: 0,
  }));
  const set = await BackupSet.create(join(dir, 'set'), DOMAIN);
  t.teardown(() => set.close());
  const exports = await OfflineExports.start(disks, images, null, dir);
  t.teardown(() => exports.stop());
  const thread = new PullCopyThread();
  t.teardown(() => thread.stop());
  const opened = await openOfflineExports(thread, disks, exports, new AbortController().signal);
  t.teardown(() => closeExports(opened));

  // What was still open when each disk's copy began.
  const openAtStart = new Map<string, string[]>();
  const emit = (event: BackupEvent): void => {
    if (event.type !== 'progress' || openAtStart.has(event.target)) return;
    openAtStart.set(
      event.target,
      opened.filter((entry) => entry.source !== null).map((entry) => entry.disk.target),
    );
  };
  const context = { set, emit, concurrency: 1, compression: null } as unknown as ExecuteContext;
  await copyDisks(context, opened, new AbortController().signal);

  t.deepEqual(Object.fromEntries(openAtStart), { vda: ['vda', 'vdb', 'vdc'], vdb: ['vdb', 'vdc'], vdc: ['vdc'] });
  t.deepEqual(
    opened.map((entry) => entry.source),
    [null, null, null],
  );
  for (const disk of disks) {
    t.true(await imagesIdentical(set.pathOf(disk.file), 'qcow2', images.get(disk.target)!.path, 'qcow2'), disk.target);
    t.is(disk.dataBytes, 3 * 2 ** 20 + 64 * 1024);
  }
});

/** One qcow2 disk of `size` with `data` written at its start, exported by qemu-nbd as a shut-off domain's disk is, and a set to copy it into. */
async function oneDiskCopy(t: ExecutionContext, size: string, data: string) {
  const { dir, image, disk, exports } = await exportedDisk(t, 'lvb-pull-transfer-', size, data);
  const set = await BackupSet.create(join(dir, 'set'), DOMAIN);
  t.teardown(() => set.close());
  const thread = new PullCopyThread();
  t.teardown(() => thread.stop());
  return { disk, set, image, exports, thread };
}

test('the copy goes on while the thread that runs the backup is blocked', async (t) => {
  const { disk, set, image, exports, thread } = await oneDiskCopy(t, '256M', '192M');
  const opened = await openOfflineExports(thread, [disk], exports, new AbortController().signal);
  t.teardown(() => closeExports(opened));
  const file = set.pathOf(disk.file);
  let grewWhileBlocked = -1;
  const emit = (event: BackupEvent): void => {
    if (event.type !== 'progress' || grewWhileBlocked !== -1) return;
    // Blocks this thread until the file has grown by 64 MiB (or 20 s pass): a copy
    // made on this thread could not write a byte meanwhile.
    const before = statSync(file).size;
    const deadline = Date.now() + 20_000;
    while (statSync(file).size < before + 64 * 2 ** 20 && Date.now() < deadline);
    grewWhileBlocked = statSync(file).size - before;
  };
  const context = { set, emit, concurrency: 1, compression: null } as unknown as ExecuteContext;
  await copyDisks(context, opened, new AbortController().signal);
  t.true(grewWhileBlocked >= 64 * 2 ** 20, `the file grew ${grewWhileBlocked} bytes while this thread was blocked`);
  t.true(await imagesIdentical(file, 'qcow2', image.path, 'qcow2'));
});

test('an aborted copy has stopped writing when it rejects, with the run’s own reason', async (t) => {
  const { disk, set, exports, thread } = await oneDiskCopy(t, '512M', '384M');
  const opened = await openOfflineExports(thread, [disk], exports, new AbortController().signal);
  t.teardown(() => closeExports(opened));
  const stop = new AbortController();
  const reason = new BackupError('NO_SPACE', 'the destination is full');
  const emit = (event: BackupEvent): void => {
    if (event.type === 'progress' && event.bytesDone > 0) stop.abort(reason);
  };
  const context = { set, emit, concurrency: 1, compression: null } as unknown as ExecuteContext;
  const error = await t.throwsAsync(copyDisks(context, opened, stop.signal));
  t.is(error, reason);
  const size = statSync(set.pathOf(disk.file)).size;
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.is(statSync(set.pathOf(disk.file)).size, size, 'nothing was written after the rejection');
  t.deepEqual(
    opened.map((entry) => entry.source),
    [null],
  );
});
