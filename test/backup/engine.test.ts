// The backup engine against the real daemon: every point restores to exactly
// what the disks held, over both transports, with a raw disk in the mix.
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import test from 'ava';

import { BackupSet, restore } from '../../src/backup/index.js';
import { runBackup, type BackupEvent } from '../../src/backup/engine/engine.js';
import { CheckpointDeleteFlags, JobType } from '../../src/index.js';
import { connectSystem } from '../helpers/daemon.js';
import { imagesIdentical, mirroredDomain } from './engine-helpers.js';

for (const transport of ['pull', 'push'] as const) {
  test(`${transport}: full, inc, inc, diff restore to the references; the last equals the live disks`, async (t) => {
    const conn = await connectSystem();
    t.teardown(() => conn.close());
    const m = await mirroredDomain(t, conn, `eng-${transport}`, [{ sizeMiB: 32 }, { sizeMiB: 16 }, { sizeMiB: 16, format: 'raw' }]);
    const dest = join(m.dir, 'set');
    const events: BackupEvent[] = [];
    const backup = (level: 'auto' | 'inc' | 'diff') =>
      runBackup({ domain: m.vm.name, dest, connection: conn, level, transport, onEvent: (e) => events.push(e) });

    await m.write(0, 0x11, '0', '2M');
    await m.write(2, 0x12, '1M', '1M');
    const full = await backup('auto');
    t.is(full.level, 'full');
    await m.snapshot(full.backupId);

    await m.write(0, 0x21, '1M', '64k');
    await m.write(1, 0x22, '8M', '128k');
    await m.write(2, 0x23, '0', '64k');
    const inc1 = await backup('auto');
    t.is(inc1.level, 'inc');
    await m.snapshot(inc1.backupId);

    await m.write(0, 0x31, '20M', '1M');
    await m.write(0, 0x00, '0', '64k');
    const inc2 = await backup('inc');
    t.is(inc2.level, 'inc');
    await m.snapshot(inc2.backupId);

    await m.write(1, 0x41, '0', '64k');
    const diff = await backup('diff');
    t.is(diff.level, 'diff');
    await m.snapshot(diff.backupId);

    // Incrementals hold only what changed; the raw disk is copied whole each time.
    const vdaInc = inc1.disks.find((d) => d.target === 'vda')!;
    t.is(vdaInc.level, 'inc');
    t.true(vdaInc.dataBytes <= 128 * 1024, `vda inc copied ${vdaInc.dataBytes} bytes`);
    t.is(inc1.disks.find((d) => d.target === 'vdc')!.level, 'full');
    t.true(events.some((e) => e.type === 'notice' && /vdc: full copy/.test(e.message)));
    t.is(diff.disks.find((d) => d.target === 'vda')!.backingFile, full.disks.find((d) => d.target === 'vda')!.file);

    const set = await BackupSet.open(dest);
    t.deepEqual(
      set.backups.map((b) => b.level),
      ['full', 'inc', 'inc', 'diff'],
    );
    for (const point of [full, inc1, inc2, diff]) {
      const out = join(m.dir, `restore-${point.backupId}`);
      await mkdir(out);
      const restored = await restore(set, { to: out, at: point.backupId, format: 'raw' });
      for (const [i, disk] of restored.disks.entries()) {
        t.true(await imagesIdentical(disk.path, 'raw', m.referenceAt(point.backupId, i), 'raw'), `${disk.target} at ${point.backupId}`);
      }
    }
    // The final restore equals the live disks once the domain is off.
    await m.vm.domain.destroy();
    const finalOut = join(m.dir, 'restore-final');
    await mkdir(finalOut);
    const restored = await restore(set, { to: finalOut, format: 'qcow2' });
    for (const [i, disk] of restored.disks.entries()) {
      t.true(await imagesIdentical(disk.path, 'qcow2', m.vm.disks[i]!.path, m.vm.disks[i]!.format), `${disk.target} vs live disk`);
    }
  });
}

test('an aborted run leaves no job, no file and the manifest as it was; the next auto backup works', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'eng-abort', [{ sizeMiB: 512 }]);
  const dest = join(m.dir, 'set');
  await m.write(0, 0x51, '0', '8M');
  await runBackup({ domain: m.vm.name, dest, connection: conn });
  const manifestBefore = await readFile(join(dest, 'manifest.json'));
  const filesBefore = (await readdir(dest)).sort();
  await m.write(0, 0x52, '0', '384M');

  const controller = new AbortController();
  const error = await t.throwsAsync(
    runBackup({
      domain: m.vm.name,
      dest,
      connection: conn,
      level: 'full',
      signal: controller.signal,
      onEvent: (e) => {
        if (e.type === 'progress') controller.abort();
      },
    }),
  );
  t.is((error as { code?: string }).code, 'ABORTED');
  t.is((await m.vm.domain.getJobInfo()).type, JobType.NONE);
  t.deepEqual((await readdir(dest)).sort(), filesBefore);
  t.deepEqual(await readFile(join(dest, 'manifest.json')), manifestBefore);
  const checkpoints = (await m.vm.domain.listAllCheckpoints()).map((c) => c.name);
  t.is(checkpoints.length, 1, `only the first backup's checkpoint remains: ${checkpoints.join(', ')}`);

  const next = await runBackup({ domain: m.vm.name, dest, connection: conn });
  t.is(next.level, 'inc');
  await m.snapshot('after');
  const set = await BackupSet.open(dest);
  const out = join(m.dir, 'restore');
  await mkdir(out);
  const restored = await restore(set, { to: out, format: 'raw' });
  t.true(await imagesIdentical(restored.disks[0]!.path, 'raw', m.referenceAt('after', 0), 'raw'));
});

test('checkpoint drift: lost metadata is redefined and the run stays incremental; a lost bitmap falls back to full', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'eng-drift', [{ sizeMiB: 16 }]);
  const dest = join(m.dir, 'set');
  await m.write(0, 0x61, '0', '1M');
  const first = await runBackup({ domain: m.vm.name, dest, connection: conn });

  // libvirt forgets the checkpoint (as after an undefine/define): the bitmap remains in the image.
  await (await m.vm.domain.lookupCheckpointByName(first.checkpoint)).delete(CheckpointDeleteFlags.METADATA_ONLY);
  await m.write(0, 0x62, '2M', '64k');
  const notices: string[] = [];
  const second = await runBackup({
    domain: m.vm.name,
    dest,
    connection: conn,
    onEvent: (e) => e.type === 'notice' && notices.push(e.message),
  });
  t.is(second.level, 'inc');
  t.true(
    notices.some((n) => n.includes(`checkpoint ${first.checkpoint} was missing from libvirt; redefined`)),
    notices.join('\n'),
  );
  t.true(second.disks[0]!.dataBytes <= 65536);

  // The bitmap itself disappears: auto takes a full and says why; inc refuses.
  const blocks = JSON.parse(await m.vm.domain.qemuMonitorCommand('{"execute":"query-block"}')) as {
    return: Array<{ qdev?: string; inserted?: { 'node-name': string } }>;
  };
  const node = blocks.return.find((b) => b.qdev?.includes('virtio-disk0'))!.inserted!['node-name'];
  await m.vm.domain.qemuMonitorCommand(JSON.stringify({ execute: 'block-dirty-bitmap-remove', arguments: { node, name: second.checkpoint } }));
  await m.write(0, 0x63, '4M', '64k');
  const refused = await t.throwsAsync(runBackup({ domain: m.vm.name, dest, connection: conn, level: 'inc' }));
  t.is((refused as { code?: string }).code, 'CHAIN_UNUSABLE');
  t.regex(refused!.message, new RegExp(`bitmap of checkpoint ${second.checkpoint} is missing or broken`));
  const fallback: string[] = [];
  const third = await runBackup({ domain: m.vm.name, dest, connection: conn, onEvent: (e) => e.type === 'notice' && fallback.push(e.message) });
  t.is(third.level, 'full');
  t.true(
    fallback.some((n) => n.startsWith('taking a full backup: the bitmap of checkpoint')),
    fallback.join('\n'),
  );
  await m.snapshot('third');
  const out = join(m.dir, 'restore');
  await mkdir(out);
  const restored = await restore(await BackupSet.open(dest), { to: out, format: 'raw' });
  t.true(await imagesIdentical(restored.disks[0]!.path, 'raw', m.referenceAt('third', 0), 'raw'));
});

test('bad input is refused with a clear error and changes nothing', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'eng-bad', [{ sizeMiB: 16 }]);
  const other = await mirroredDomain(t, conn, 'eng-other', [{ sizeMiB: 16 }]);
  const dest = join(m.dir, 'set');
  await runBackup({ domain: m.vm.name, dest, connection: conn });
  const manifest = await readFile(join(dest, 'manifest.json'));
  const files = (await readdir(dest)).sort();
  const unchanged = async () => {
    t.deepEqual(await readFile(join(dest, 'manifest.json')), manifest);
    t.deepEqual((await readdir(dest)).sort(), files);
  };

  const unknown = await t.throwsAsync(runBackup({ domain: 'lvbt-no-such-domain', dest, connection: conn }));
  t.is((unknown as { code?: string }).code, 'DOMAIN_NOT_FOUND');
  t.regex(unknown!.message, /no domain named 'lvbt-no-such-domain'/);

  const foreign = await t.throwsAsync(runBackup({ domain: other.vm.name, dest, connection: conn }));
  t.regex(foreign!.message, new RegExp(m.vm.name));
  await unchanged();

  const badDisk = await t.throwsAsync(runBackup({ domain: m.vm.name, dest, connection: conn, disks: ['vdz'] }));
  t.regex(badDisk!.message, /has no disk 'vdz'/);
  await unchanged();

  const unwritableParent = await mkdtemp(join(tmpdir(), 'lvb-ro-'));
  t.teardown(() => rm(unwritableParent, { recursive: true, force: true }));
  // Root ignores permissions: a path under a regular file can never be created.
  await writeFile(join(unwritableParent, 'file'), 'x');
  const unwritable = await t.throwsAsync(runBackup({ domain: m.vm.name, dest: join(unwritableParent, 'file', 'set'), connection: conn }));
  t.truthy(unwritable!.message);
  t.regex(unwritable!.message, /file/);

  await writeFile(join(dest, 'manifest.json'), '{ not json');
  const corrupt = await t.throwsAsync(runBackup({ domain: m.vm.name, dest, connection: conn }));
  t.regex(corrupt!.message, /manifest\.json/);
  t.deepEqual(await readFile(join(dest, 'manifest.json'), 'utf8'), '{ not json');
  t.is((await m.vm.domain.getJobInfo()).type, JobType.NONE);
});
