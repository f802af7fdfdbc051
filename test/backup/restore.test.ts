import test from 'ava';
import { open, readFile, readdir, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { BackupSet } from '../../src/backup/set/backup-set.js';
import { restore } from '../../src/backup/restore/restore.js';
import { BackupSetError } from '../../src/backup/errors.js';
import { TWO_DISKS, buildSet, deadPid, imagesEqual, qemuImg, tempDir } from './helpers.js';

test('restore at every point equals the reference, qcow2 and raw, two disks', async (t) => {
  const builder = await buildSet(t, ['full', 'inc', 'inc', 'diff', 'inc'], TWO_DISKS);
  const set = await BackupSet.open(builder.dir);
  t.deepEqual(
    set.chainFor('vda', '0005').map((link) => link.disk.file),
    ['vda.0001.full.qcow2', 'vda.0004.diff.qcow2', 'vda.0005.inc.qcow2'],
  );
  t.deepEqual(
    set.chainFor('vdb', '0003').map((link) => link.disk.file),
    ['vdb.0003.full.qcow2'],
  );
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

/** Where qemu-img says the file keeps its first data cluster, and its first L2 table (from the header). */
async function dataAndTableOffsets(path: string): Promise<{ data: number; l2: number }> {
  const map = JSON.parse(await qemuImg('map', '--output=json', path)) as Array<{ depth: number; data: boolean; offset?: number }>;
  const data = map.find((extent) => extent.depth === 0 && extent.data && extent.offset !== undefined)!.offset!;
  const bytes = await readFile(path);
  const l1 = Number(bytes.readBigUInt64BE(40));
  const l2 = Number(bytes.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
  return { data, l2 };
}

async function flipByte(path: string, at: number, mask = 0xff): Promise<void> {
  const handle = await open(path, 'r+');
  const byte = Buffer.alloc(1);
  await handle.read(byte, 0, 1, at);
  byte[0]! ^= mask;
  await handle.write(byte, 0, 1, at);
  await handle.close();
}

test('damage in a data cluster, in an L2 table, or a truncation fails with the checksum and leaves nothing', async (t) => {
  const damages: Array<[string, (path: string) => Promise<void>, RegExp]> = [
    [
      'data byte',
      async (path) => flipByte(path, (await dataAndTableOffsets(path)).data + 4242),
      /^vda\.0002\.inc\.qcow2: checksum is xxh128:[0-9a-f]{32}, the manifest says xxh128:[0-9a-f]{32}; the file is damaged$/,
    ],
    // Bit 16 of the first entry: the cluster now points 64 KiB away.
    [
      'L2 entry',
      async (path) => flipByte(path, (await dataAndTableOffsets(path)).l2 + 5, 0x01),
      /^vda\.0002\.inc\.qcow2: checksum is .*; the file is damaged$/,
    ],
    [
      'truncation',
      async (path) => truncate(path, (await stat(path)).size - 70_000),
      /^vda\.0002\.inc\.qcow2: the file is \d+ bytes with checksum xxh128:[0-9a-f]{32}, the manifest says \d+ bytes with xxh128:[0-9a-f]{32}; the file is damaged$/,
    ],
  ];
  for (const [label, damage, message] of damages) {
    const builder = await buildSet(t, ['full', 'inc']);
    await damage(join(builder.dir, 'vda.0002.inc.qcow2'));
    const set = await BackupSet.open(builder.dir);
    for (const format of ['raw', 'qcow2'] as const) {
      const out = await tempDir(t, 'restore-');
      const error = await t.throwsAsync(restore(set, { to: out, format }), { instanceOf: BackupSetError }, label);
      t.is(error?.code, 'CHECKSUM_MISMATCH', label);
      t.regex(error!.message, message, label);
      t.deepEqual(await readdir(out), [], `${label}: no output, no temporary`);
    }
    if (label !== 'data byte') continue;
    // Salvage: the damaged chain restores, the damage says so, and only the flipped byte differs.
    const out = await tempDir(t, 'restore-');
    const notices: string[] = [];
    const result = await restore(set, { to: out, format: 'raw', verifyChecksums: false, onNotice: (notice) => notices.push(notice) });
    t.is(result.disks[0]!.method, 'one-pass');
    t.deepEqual(result.notices, notices);
    t.is(notices.length, 1);
    t.regex(notices[0]!, /^vda\.0002\.inc\.qcow2: checksum is .*; the file is damaged; restored anyway because checksum verification is off$/);
    const restored = await readFile(join(out, 'vda.raw'));
    const reference = await readFile(builder.referenceAt('vda', '0002'));
    let differing = 0;
    for (let index = 0; index < reference.length; index++) if (restored[index] !== reference[index]) differing++;
    t.is(differing, 1, 'exactly the flipped byte differs');
  }
});

test('each chain file is read once: bytes read equal the chain size, metadata aside', async (t) => {
  const builder = await buildSet(t, ['full', 'inc', 'inc']);
  const set = await BackupSet.open(builder.dir);
  const chain = set.chainFor('vda');
  const chainBytes = chain.reduce((sum, link) => sum + link.disk.fileSize, 0);
  for (const format of ['raw', 'qcow2'] as const) {
    const out = await tempDir(t, 'restore-');
    const result = await restore(set, { to: out, format });
    const disk = result.disks[0]!;
    t.is(disk.method, 'one-pass');
    t.is(disk.bytesRead, chainBytes, 'the sequential pass reads every byte of every file exactly once');
    // Headers and mapping tables: a header cluster, one L1 cluster and one L2 table per file here.
    t.true(disk.metadataBytesRead <= chain.length * 3 * 65536 + 1024, `metadata read: ${disk.metadataBytesRead}`);
    t.true(await imagesEqual(disk.path, builder.referenceAt('vda', '0003')));
  }
});

test('restored images are created with the mode asked for, 0600 by default', async (t) => {
  const builder = await buildSet(t, ['full']);
  const set = await BackupSet.open(builder.dir);
  const out = await tempDir(t, 'restore-');
  await restore(set, { to: join(out, 'private.qcow2'), format: 'qcow2' });
  t.is((await stat(join(out, 'private.qcow2'))).mode & 0o7777, 0o600);
  await restore(set, { to: join(out, 'shared.raw'), format: 'raw', mode: 0o640 });
  t.is((await stat(join(out, 'shared.raw'))).mode & 0o7777, 0o640);
  const error = await t.throwsAsync(restore(set, { to: join(out, 'bad.raw'), format: 'raw', mode: 0o10000 }), { instanceOf: BackupSetError });
  t.is(error?.code, 'INVALID_ARGUMENT');
});

test('partial outputs of restores that died are removed and reported; live, foreign and ownerless ones stay', async (t) => {
  const builder = await buildSet(t, ['full']);
  const set = await BackupSet.open(builder.dir);
  const out = await tempDir(t, 'restore-');
  const dead = `.vda.raw.partial-${hostname()}-${deadPid()}-0badc0de`;
  const live = `.vda.raw.partial-${hostname()}-${process.pid}-1234abcd`;
  const foreign = `.vda.raw.partial-elsewhere.example-${deadPid()}-5678abcd`;
  const ownerless = '.vda.raw.partial-9abcdef0';
  for (const name of [dead, live, foreign, ownerless]) await writeFile(join(out, name), Buffer.alloc(8192, 1));
  const notices: string[] = [];
  const result = await restore(set, { to: out, format: 'raw', onNotice: (notice) => notices.push(notice) });
  t.deepEqual(result.notices, notices);
  t.is(notices.length, 2);
  t.regex(
    notices[0]!,
    new RegExp(`^removed ${join(out, dead).replaceAll('.', '\\.')} \\(8\\.0 KiB\\): the partial vda\\.raw of a restore \\(pid \\d+\\) that did not finish$`),
  );
  t.regex(notices[1]!, /^left .*\.vda\.raw\.partial-9abcdef0 in place: a partial output of an older version/);
  t.deepEqual((await readdir(out)).sort(), [foreign, live, ownerless, 'vda.raw'].sort());
});
