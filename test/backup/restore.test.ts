import test from 'ava';
import { open, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { BackupSet } from '../../src/backup/backup-set.js';
import { restore } from '../../src/backup/restore.js';
import { BackupSetError } from '../../src/backup/errors.js';
import { TWO_DISKS, buildSet, imagesEqual, qemuImg, tempDir } from './helpers.js';

test('restore at every point equals the reference, qcow2 and raw, two disks', async (t) => {
  const builder = await buildSet(t, ['full', 'inc', 'inc', 'diff', 'inc'], TWO_DISKS);
  const set = await BackupSet.open(builder.dir);
  t.deepEqual(
    set.chainFor('vda', '0005').map((link) => link.disk.file),
    ['vda.0001.full.qcow2', 'vda.0004.diff.qcow2', 'vda.0005.inc.qcow2'],
  );
  t.deepEqual(set.chainFor('vdb', '0003').map((link) => link.disk.file), ['vdb.0003.full.qcow2']);
  for (const backup of set.backups) {
    for (const format of ['qcow2', 'raw'] as const) {
      const out = await tempDir(t, 'restore-');
      const result = await restore(set, { to: out, at: backup.id, format });
      t.is(result.disks.length, 2);
      for (const disk of result.disks) {
        t.is(disk.path, join(out, `${disk.target}.${format}`));
        t.true(await imagesEqual(disk.path, builder.referenceAt(disk.target, backup.id)), `${disk.target} at ${backup.id} (${format})`);
        if (format === 'qcow2') t.notRegex(await qemuImg('info', disk.path), /backing file/);
      }
    }
  }
});

test('restore of one disk to a file path, and refusal to overwrite', async (t) => {
  const builder = await buildSet(t, ['full', 'inc'], TWO_DISKS);
  const set = await BackupSet.open(builder.dir);
  const out = await tempDir(t, 'restore-');
  const path = join(out, 'vda.img');
  await restore(set, { to: path, disk: 'vda', at: '0001', format: 'raw' });
  t.true(await imagesEqual(path, builder.referenceAt('vda', '0001')));
  const error = await t.throwsAsync(restore(set, { to: path, disk: 'vda', format: 'raw' }), { instanceOf: BackupSetError });
  t.is(error?.code, 'OUTPUT_EXISTS');
  t.true(await imagesEqual(path, builder.referenceAt('vda', '0001')), 'existing output untouched');
  await restore(set, { to: path, disk: 'vda', format: 'raw', overwrite: true });
  t.true(await imagesEqual(path, builder.referenceAt('vda', '0002')));
  const several = await t.throwsAsync(restore(set, { to: join(out, 'x.img'), format: 'raw' }), { instanceOf: BackupSetError });
  t.is(several?.code, 'INVALID_ARGUMENT');
  const unknown = await t.throwsAsync(restore(set, { to: out, disk: 'vdz', format: 'raw' }), { instanceOf: BackupSetError });
  t.is(unknown?.code, 'NOT_FOUND');
  t.deepEqual(await readdir(out), ['vda.img']);
});

test('restore with a missing backing file fails clearly and writes nothing', async (t) => {
  const builder = await buildSet(t, ['full', 'inc', 'inc']);
  await rm(join(builder.dir, 'vda.0002.inc.qcow2'));
  const set = await BackupSet.open(builder.dir);
  const out = await tempDir(t, 'restore-');
  const error = await t.throwsAsync(restore(set, { to: out, format: 'qcow2' }), { instanceOf: BackupSetError });
  t.is(error?.code, 'CHAIN_BROKEN');
  t.is(error?.message, 'vda.0003.inc.qcow2: backing file vda.0002.inc.qcow2 is missing');
  t.deepEqual(await readdir(out), []);
  // The point before the gap still restores.
  await restore(set, { to: out, at: '0001', format: 'raw' });
  t.true(await imagesEqual(join(out, 'vda.raw'), builder.referenceAt('vda', '0001')));
});

test('restore refuses a chain whose backing pointer disagrees with the manifest', async (t) => {
  const builder = await buildSet(t, ['full', 'inc', 'inc']);
  await qemuImg('rebase', '-u', '-F', 'qcow2', '-b', 'vda.0001.full.qcow2', join(builder.dir, 'vda.0003.inc.qcow2'));
  const set = await BackupSet.open(builder.dir);
  const out = await tempDir(t, 'restore-');
  const error = await t.throwsAsync(restore(set, { to: out, format: 'qcow2' }), { instanceOf: BackupSetError });
  t.is(error?.code, 'CHAIN_BROKEN');
  t.is(error?.message, 'vda.0003.inc.qcow2: backing file is vda.0001.full.qcow2 but the manifest says vda.0002.inc.qcow2');
  t.deepEqual(await readdir(out), []);
});

test('an aborted restore leaves no partial output', async (t) => {
  const builder = await buildSet(t, ['full', 'inc'], TWO_DISKS);
  const set = await BackupSet.open(builder.dir);
  const out = await tempDir(t, 'restore-');
  const controller = new AbortController();
  const pending = restore(set, {
    to: out,
    format: 'raw',
    signal: controller.signal,
    onProgress: () => controller.abort(new Error('user pressed Ctrl-C')),
  });
  const error = await t.throwsAsync(pending, { instanceOf: BackupSetError });
  t.is(error?.code, 'ABORTED');
  t.deepEqual(await readdir(out), []);

  const already = AbortSignal.abort();
  await t.throwsAsync(restore(set, { to: out, format: 'raw', signal: already }), { instanceOf: BackupSetError });
  t.deepEqual(await readdir(out), []);
});

test('restore refuses a damaged file by default, and with the deprecated checksums option', async (t) => {
  const builder = await buildSet(t, ['full', 'inc']);
  const path = join(builder.dir, 'vda.0001.full.qcow2');
  const handle = await open(path, 'r+');
  const { size } = await handle.stat();
  await handle.write(Buffer.from([0xee]), 0, 1, size - 1);
  await handle.close();
  const set = await BackupSet.open(builder.dir);
  const out = await tempDir(t, 'restore-');
  for (const options of [{}, { checksums: true }, { checksums: true, verifyChecksums: false }]) {
    const error = await t.throwsAsync(restore(set, { to: out, format: 'raw', ...options }), { instanceOf: BackupSetError });
    t.is(error?.code, 'CHECKSUM_MISMATCH');
    t.regex(error!.message, /^vda\.0001\.full\.qcow2: checksum is xxh128:[0-9a-f]{32}, the manifest says xxh128:[0-9a-f]{32}; the file is damaged$/);
    t.deepEqual(await readdir(out), []);
  }
});
