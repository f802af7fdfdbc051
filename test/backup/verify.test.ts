import test from 'ava';
import { open, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BackupSet } from '../../src/backup/set/backup-set.js';
import { verify, type VerifyReport } from '../../src/backup/restore/verify.js';
import { formatListJson, formatListTable, listBackups } from '../../src/backup/restore/list.js';
import { TWO_DISKS, buildSet, qemuImg, type SetBuilder } from './helpers.js';

function errors(report: VerifyReport): string[] {
  return report.problems.filter((problem) => problem.severity === 'error').map((problem) => `${problem.kind} ${problem.message}`);
}

async function freshCopy(t: Parameters<typeof buildSet>[0]): Promise<SetBuilder> {
  return buildSet(t, ['full', 'inc', 'inc'], TWO_DISKS);
}

test('a good set verifies, and list shows it', async (t) => {
  const builder = await freshCopy(t);
  const set = await BackupSet.open(builder.dir);
  const progress: string[] = [];
  const report = await verify(set, { onProgress: ({ file, bytesHashed }) => bytesHashed === undefined && progress.push(file) });
  t.true(report.ok, JSON.stringify(report.problems));
  t.deepEqual(report.problems, []);
  t.is(report.files.length, 6);
  t.is(progress.length, 6);

  const listing = listBackups(set);
  t.deepEqual(
    listing.backups.map((row) => [row.id, row.level, row.parent]),
    [
      ['0001', 'full', null],
      ['0002', 'inc', '0001'],
      ['0003', 'inc', '0002'],
    ],
  );
  const table = formatListTable(listing);
  t.regex(table, /^vm1 \(4dea22b3-1d52-d8f3-2516-782e98ab3fa0\) in /);
  t.regex(table, /\n0002 +inc +- +0001 +\S+ +cp-0002 +vda,vdb\(full\) /);
  t.deepEqual(
    JSON.parse(formatListJson(listing)).backups[2].disks.map((disk: { file: string }) => disk.file),
    ['vda.0003.inc.qcow2', 'vdb.0003.full.qcow2'],
  );
});

test('a flipped byte is a checksum mismatch on that file only', async (t) => {
  const builder = await freshCopy(t);
  const handle = await open(join(builder.dir, 'vda.0002.inc.qcow2'), 'r+');
  const { size } = await handle.stat();
  const byte = Buffer.alloc(1);
  await handle.read(byte, 0, 1, size - 100);
  byte[0] = byte[0]! ^ 0xff;
  await handle.write(byte, 0, 1, size - 100);
  await handle.close();
  const report = await verify(await BackupSet.open(builder.dir));
  t.false(report.ok);
  const found = errors(report);
  t.is(found.length, 1, found.join('\n'));
  t.regex(found[0]!, /^checksum-mismatch vda\.0002\.inc\.qcow2: checksum is xxh128:[0-9a-f]{32}, the manifest says xxh128:[0-9a-f]{32}$/);
  t.deepEqual(
    report.files.filter((file) => !file.ok).map((file) => file.file),
    ['vda.0002.inc.qcow2'],
  );
});

test('a truncated file is reported with its size, checksum and image damage', async (t) => {
  const builder = await freshCopy(t);
  const path = join(builder.dir, 'vda.0001.full.qcow2');
  const before = builder.set.backups[0]!.disks[0]!.fileSize;
  await truncate(path, 65536 * 3);
  const report = await verify(await BackupSet.open(builder.dir));
  t.false(report.ok);
  const found = errors(report);
  t.true(found.includes(`size-mismatch vda.0001.full.qcow2: truncated: size is 196608 bytes, the manifest says ${before}`), found.join('\n'));
  t.true(found.some((problem) => problem.startsWith('checksum-mismatch vda.0001.full.qcow2')));
  t.true(
    found.every((problem) => problem.includes('vda.0001.full.qcow2')),
    found.join('\n'),
  );
});

test('a deleted file is missing, and the files backed by it are named too', async (t) => {
  const builder = await freshCopy(t);
  await rm(join(builder.dir, 'vda.0002.inc.qcow2'));
  const report = await verify(await BackupSet.open(builder.dir));
  t.false(report.ok);
  t.deepEqual(errors(report), [
    'missing vda.0002.inc.qcow2: missing (backup 0002, disk vda)',
    'backing-missing vda.0003.inc.qcow2: backing file vda.0002.inc.qcow2 is missing, so backup 0003 of vda cannot be restored',
  ]);
});

test('a backing pointer moved elsewhere is a backing mismatch', async (t) => {
  const builder = await freshCopy(t);
  const path = join(builder.dir, 'vda.0003.inc.qcow2');
  await qemuImg('rebase', '-u', '-F', 'qcow2', '-b', 'vda.0001.full.qcow2', path);
  const set = await BackupSet.open(builder.dir);
  // Without checksums, so that only the pointer (not the changed header bytes) is reported.
  const report = await verify(set, { checksums: false });
  t.deepEqual(errors(report), ['backing-mismatch vda.0003.inc.qcow2: backing file is vda.0001.full.qcow2, the manifest says vda.0002.inc.qcow2']);
  const absolute = join(builder.dir, 'vda.0002.inc.qcow2');
  await qemuImg('rebase', '-u', '-F', 'qcow2', '-b', absolute, path);
  const second = await verify(set, { checksums: false });
  t.deepEqual(errors(second), [
    `backing-mismatch vda.0003.inc.qcow2: backing file is ${absolute}, the manifest says vda.0002.inc.qcow2 (an absolute or relative path instead of the plain file name: the set cannot be moved)`,
  ]);
});

test('orphan files and an unfinished run are warnings, not errors', async (t) => {
  const builder = await freshCopy(t);
  await qemuImg('create', '-q', '-f', 'qcow2', join(builder.dir, 'vda.0009.inc.qcow2'), '1M');
  await writeFile(
    join(builder.dir, '.in-progress.json'),
    JSON.stringify({ format: 'libvirt-backup-run', kind: 'backup', pid: 1, hostname: 'h', startedAt: 'now', creates: [], deletes: [] }),
  );
  const report = await verify(await BackupSet.open(builder.dir), { checksums: false });
  t.true(report.ok);
  t.deepEqual(
    report.problems.map((problem) => [problem.severity, problem.kind, problem.file]),
    [
      ['warning', 'interrupted-run', '.in-progress.json'],
      ['warning', 'orphan-file', 'vda.0009.inc.qcow2'],
    ],
  );
});
