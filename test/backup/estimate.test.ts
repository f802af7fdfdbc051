// `estimateBackup()` / `backup --dry-run`: the level and the bytes a backup would copy,
// checked against the backup that then runs, and nothing created or changed by asking.
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

import test from 'ava';

import { estimateBackup } from '../../src/backup/index.js';
import { runBackup } from '../../src/backup/engine/engine.js';
import { JobType } from '../../src/index.js';
import { connectSystem } from '../helpers/daemon.js';
import { jsonLines, runCli } from '../cli/helpers.js';
import { mirroredDomain } from './engine-helpers.js';

const MiB = 1024 * 1024;

test('estimates match what the backups then copy, full and incremental, and asking changes nothing', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'estimate', [{ sizeMiB: 32 }, { sizeMiB: 16, format: 'raw' }]);
  const dest = join(m.dir, 'set');
  await m.write(0, 0x51, '0', '4M');
  await m.write(1, 0x52, '0', '2M');

  const first = await estimateBackup({ domain: m.vm.name, dest, connection: conn });
  t.like(first, { level: 'full', parent: null, reason: 'the set has no backup yet' });
  t.like(first.disks[0], { target: 'vda', level: 'full', bytes: 4 * MiB, basis: 'allocated-data' });
  t.like(first.disks[1], { target: 'vdb', level: 'full', basis: 'allocated-data' });
  t.true(first.disks[1]!.bytes! >= 2 * MiB && first.disks[1]!.bytes! < 3 * MiB, `${first.disks[1]!.bytes}`);
  await t.throwsAsync(stat(dest), { code: 'ENOENT' }, 'no set directory is made');
  const full = await runBackup({ domain: m.vm.name, dest, connection: conn });
  t.is(full.disks[0]!.dataBytes, first.disks[0]!.bytes!);

  await m.write(0, 0x53, '8M', '1M');
  const manifest = await readFile(join(dest, 'manifest.json'));
  const files = (await readdir(dest)).sort();
  const checkpoints = (await m.vm.domain.listAllCheckpoints()).map((checkpoint) => checkpoint.name).sort();
  const next = await estimateBackup({ domain: m.vm.name, dest, connection: conn });
  t.like(next, { level: 'inc', parent: full.backupId });
  t.like(next.disks[0], { target: 'vda', level: 'inc', bytes: 1 * MiB, basis: 'changed-since-checkpoint' });
  t.like(next.disks[1], { target: 'vdb', level: 'full', basis: 'allocated-data' });
  t.regex(next.disks[1]!.note ?? '', /full copy/);
  t.deepEqual(await readFile(join(dest, 'manifest.json')), manifest);
  t.deepEqual((await readdir(dest)).sort(), files);
  t.deepEqual((await m.vm.domain.listAllCheckpoints()).map((checkpoint) => checkpoint.name).sort(), checkpoints);
  t.is((await m.vm.domain.getJobInfo()).type, JobType.NONE);

  const inc = await runBackup({ domain: m.vm.name, dest, connection: conn });
  t.is(inc.level, 'inc');
  t.is(inc.disks[0]!.dataBytes, next.disks[0]!.bytes!);
  await m.write(0, 0x54, '16M', '2M');
  const diff = await estimateBackup({ domain: m.vm.name, dest, connection: conn, level: 'diff' });
  t.like(diff, { level: 'diff', parent: full.backupId });
  t.is(diff.disks[0]!.bytes, 3 * MiB, 'a differential counts every change since the full');

  const cli = await runCli(['backup', m.vm.name, '--dest', dest, '--dry-run', '--json']);
  t.is(cli.code, 0, cli.stderr);
  const result = jsonLines(cli.stdout).at(-1)!;
  t.like(result, { type: 'result', command: 'backup', dryRun: true, level: 'inc' });
  const text = await runCli(['backup', m.vm.name, '--dest', dest, '--dry-run']);
  t.regex(
    text.stdout,
    /^dry run: a backup of \S+ into .* would be inc \(changes since backup 0002\) and copy .*; nothing was created\n {2}vda {2}inc {2}\s*2(\.0)? MiB {2}changed-since-checkpoint/,
  );
  t.deepEqual((await m.vm.domain.listAllCheckpoints()).length, 2);
});

test('an estimate of an incremental without a set is refused as the backup would be', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'estimate-none', [{ sizeMiB: 16 }]);
  const error = await t.throwsAsync(estimateBackup({ domain: m.vm.name, dest: join(m.dir, 'set'), connection: conn, level: 'inc' }));
  t.is((error as { code?: string }).code, 'CHAIN_UNUSABLE');
  t.regex(error!.message, /holds no backup set yet/);
});
