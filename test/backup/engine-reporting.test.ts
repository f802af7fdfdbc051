// What a backup reports: progress that follows the data actually copied, and a job
// that libvirt failed or someone else cancelled as a job failure, in the library and
// in the command's --json output.
import { join } from 'node:path';

import test from 'ava';

import { runBackup, type BackupEvent } from '../../src/backup/engine/engine.js';
import { JobType } from '../../src/index.js';
import { jsonLines, startCli } from '../cli/helpers.js';
import { connectSystem } from '../helpers/daemon.js';
import { run } from '../helpers/process.js';
import { mirroredDomain } from './engine-helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;

test('progress counts the data to copy, not the size of the disk', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'rep-progress', [{ sizeMiB: 64 }]);
  const dest = join(m.dir, 'set');
  await m.write(0, 0x11, '0', '3M');
  const progress = (events: BackupEvent[]) => events.filter((e): e is Extract<BackupEvent, { type: 'progress' }> => e.type === 'progress');
  const fullEvents: BackupEvent[] = [];
  await runBackup({ domain: m.vm.name, dest, connection: conn, onEvent: (e) => fullEvents.push(e) });
  const fullLast = progress(fullEvents).at(-1)!;
  t.is(fullLast.bytesTotal, 3 * MiB, 'a full copies the 3 MiB written, not 64 MiB');
  t.is(fullLast.bytesDone, fullLast.bytesTotal);
  t.true(progress(fullEvents).every((e) => e.bytesDone <= e.bytesTotal));

  await m.write(0, 0x22, '32M', '128k');
  const incEvents: BackupEvent[] = [];
  await runBackup({ domain: m.vm.name, dest, connection: conn, onEvent: (e) => incEvents.push(e) });
  t.is(progress(incEvents).at(-1)!.bytesTotal, 128 * KiB, 'an incremental copies what changed');
});

test('a job someone else cancels is a job failure (JOB_FAILED, exit 1), and the run cleans up', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'rep-jobfail', [{ sizeMiB: 768 }]);
  const dest = join(m.dir, 'set');
  await m.write(0, 0x33, '0', '640M');
  const cli = startCli(['backup', m.vm.name, '--dest', dest, '--transport', 'push', '--json']);
  await cli.waitForLine((line) => line.includes('"type":"start"'));
  // Polled: libvirt sends no event when a job starts.
  const deadline = Date.now() + 10_000;
  while ((await m.vm.domain.getJobInfo().catch(() => ({ type: JobType.NONE }))).type === JobType.NONE && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await run('virsh', ['-c', 'qemu:///system', 'domjobabort', m.vm.name]);
  const result = await cli.done;
  t.is(result.code, 1, result.stderr);
  const error = jsonLines(result.stdout).at(-1)!;
  t.is(error['type'], 'error');
  t.is(error['code'], 'JOB_FAILED', result.stdout);
  t.regex(String(error['message']), /backup job on domain .* (was cancelled|failed)/);
  t.is((await m.vm.domain.getJobInfo()).type, JobType.NONE);
  t.deepEqual(
    (await m.vm.domain.listAllCheckpoints()).map((c) => c.name),
    [],
    'the run removed its checkpoint',
  );
});

test('a four-disk domain is copied two disks at a time by default, all four at once with concurrency 4', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'rep-disks', [{ sizeMiB: 64 }, { sizeMiB: 64 }, { sizeMiB: 64 }, { sizeMiB: 64 }]);
  for (let disk = 0; disk < 4; disk++) await m.write(disk, 0x31 + disk, '0', '48M');
  // The disks whose copy had begun (a progress event) when the first disk was done.
  const startedBeforeFirstDone = async (dest: string, concurrency?: number): Promise<string[]> => {
    const started = new Set<string>();
    let atFirstDone: string[] | undefined;
    await runBackup({
      domain: m.vm.name,
      dest,
      connection: conn,
      level: 'full',
      ...(concurrency !== undefined ? { concurrency } : {}),
      onEvent: (event) => {
        if (event.type === 'progress') started.add(event.target);
        if (event.type === 'disk-done') atFirstDone ??= [...started].sort();
      },
    });
    return atFirstDone ?? [];
  };
  t.deepEqual(await startedBeforeFirstDone(join(m.dir, 'default')), ['vda', 'vdb']);
  t.deepEqual(await startedBeforeFirstDone(join(m.dir, 'all'), 4), ['vda', 'vdb', 'vdc', 'vdd']);
});
