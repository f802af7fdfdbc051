// prune on a live domain: old points merged away, their libvirt checkpoints
// deleted, the kept points still restore, and the chain goes on incrementally.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';

import test from 'ava';

import { runBackup } from '../../src/backup/engine/engine.js';
import { BackupSet, restore } from '../../src/backup/index.js';
import { imagesIdentical, mirroredDomain } from '../backup/engine-helpers.js';
import { connectSystem } from '../helpers/daemon.js';
import { jsonLines, runCli } from './helpers.js';

test('prune --keep 2 deletes the checkpoints that no longer serve; kept points restore; the next backup is incremental', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'cli-prune', [{ sizeMiB: 16 }]);
  const dest = join(m.dir, 'set');
  const results = [];
  for (const [i, pattern] of [0x11, 0x22, 0x33, 0x44].entries()) {
    await m.write(0, pattern, `${i}M`, '64k');
    const result = await runBackup({ domain: m.vm.name, dest, connection: conn });
    await m.snapshot(result.backupId);
    results.push(result);
  }
  t.deepEqual(
    results.map((r) => r.level),
    ['full', 'inc', 'inc', 'inc'],
  );

  const pruned = await runCli(['prune', dest, '--keep', '2', '--json']);
  t.is(pruned.code, 0, pruned.stderr);
  const result = jsonLines(pruned.stdout).at(-1) as { type: string; checkpoints?: { deleted: string[] } };
  t.is(result.type, 'result');

  const set = await BackupSet.open(dest);
  t.deepEqual(
    set.backups.map((b) => b.id),
    ['0003', '0004'],
  );
  const serving = new Set(set.backups.filter((b) => b.level === 'full' || b.id === set.latest()!.id).map((b) => b.checkpoint));
  const inLibvirt = (await m.vm.domain.listAllCheckpoints()).map((c) => c.name).sort();
  t.deepEqual(inLibvirt, [...serving].sort() as string[]);
  t.deepEqual(
    result.checkpoints?.deleted.sort(),
    [results[0]!.checkpoint, results[1]!.checkpoint, results[2]!.checkpoint].filter((n) => !serving.has(n)).sort(),
  );

  for (const id of ['0003', '0004']) {
    const out = join(m.dir, `restore-${id}`);
    await mkdir(out);
    const restored = await restore(set, { to: out, at: id, format: 'raw' });
    t.true(await imagesIdentical(restored.disks[0]!.path, 'raw', m.referenceAt(id, 0), 'raw'), `point ${id}`);
  }

  await m.write(0, 0x55, '8M', '64k');
  const next = await runBackup({ domain: m.vm.name, dest, connection: conn });
  t.is(next.level, 'inc');
  await m.snapshot(next.backupId);
  const out = join(m.dir, 'restore-next');
  await mkdir(out);
  const restored = await restore(await BackupSet.open(dest), { to: out, format: 'raw' });
  t.true(await imagesIdentical(restored.disks[0]!.path, 'raw', m.referenceAt(next.backupId, 0), 'raw'));
});

test('prune of a shut-off domain keeps the obsolete checkpoints for the next backup, which deletes them', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'cli-prune-off', [{ sizeMiB: 16 }]);
  const dest = join(m.dir, 'set');
  for (const [i, pattern] of [0x11, 0x22, 0x33].entries()) {
    await m.write(0, pattern, `${i}M`, '64k');
    await runBackup({ domain: m.vm.name, dest, connection: conn });
  }
  await m.vm.domain.destroy();
  const pruned = await runCli(['prune', dest, '--keep', '1', '--json']);
  t.is(pruned.code, 0, pruned.stderr);
  const notices = jsonLines(pruned.stdout)
    .filter((e) => e.type === 'notice')
    .map((e) => String(e['message']));
  t.true(
    notices.some((n) => /is shut off: libvirt cannot delete checkpoints .* the next backup deletes them/.test(n)),
    notices.join('\n'),
  );
  const verified = await runCli(['verify', dest]);
  t.is(verified.code, 0, verified.stdout);
  t.regex(verified.stdout, /made obsolete by prune while the domain was shut off\) still in libvirt though no backup needs them; the next backup deletes them/);

  await m.vm.domain.start();
  await m.write(0, 0x44, '4M', '64k');
  const next = await runBackup({ domain: m.vm.name, dest, connection: conn });
  t.is(next.level, 'inc');
  const set = await BackupSet.open(dest);
  const named = set.backups.map((b) => b.checkpoint).filter((c): c is string => c !== null);
  const inLibvirt = (await m.vm.domain.listAllCheckpoints()).map((c) => c.name).sort();
  t.deepEqual(inLibvirt, [...new Set(named)].sort(), 'libvirt holds exactly what the set names');
});
