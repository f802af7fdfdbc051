import test from 'ava';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../../src/backup/set/atomic-file.js';
import { BackupSet } from '../../src/backup/set/backup-set.js';
import { BackupSetError } from '../../src/backup/errors.js';
import { parseManifest, serializeManifest, type Manifest } from '../../src/backup/set/manifest.js';
import { DOMAIN, tempDir } from './helpers.js';

const CHECKSUM = `xxh128:${'a'.repeat(32)}`;

function validManifest(): Manifest {
  const disk = (id: string, level: 'full' | 'inc' | 'diff', backingFile: string | null) => ({
    target: 'vda',
    sourceFormat: 'qcow2',
    level,
    file: `vda.${id}.${level}.qcow2`,
    backingFile,
    virtualSize: 4194304,
    fileSize: 200704,
    dataBytes: 1048576,
    checksum: CHECKSUM,
  });
  const backup = (id: string, level: 'full' | 'inc' | 'diff', parent: string | null, backingFile: string | null) => ({
    id,
    level,
    transport: 'pull' as const,
    startedAt: '2024-05-01T02:00:00.000Z',
    completedAt: '2024-05-01T02:01:00.000Z',
    checkpoint: `cp-${id}`,
    checkpointXml: '<domaincheckpoint/>',
    parent,
    disks: [disk(id, level, backingFile)],
  });
  return {
    format: 'libvirt-backup-set',
    version: 2,
    domain: { ...DOMAIN },
    backups: [backup('0001', 'full', null, null), backup('0002', 'inc', '0001', 'vda.0001.full.qcow2'), backup('0003', 'diff', '0001', 'vda.0001.full.qcow2')],
  };
}

function parseMutated(mutate: (manifest: any) => void): string {
  const manifest: any = validManifest();
  mutate(manifest);
  try {
    parseManifest(JSON.stringify(manifest), 'manifest.json');
  } catch (error) {
    if (error instanceof BackupSetError) return `${error.code} ${error.message}`;
    throw error;
  }
  return 'valid';
}

test('a valid manifest round-trips', (t) => {
  const manifest = validManifest();
  t.deepEqual(parseManifest(serializeManifest(manifest)), manifest);
});

test('corrupt JSON names the file', (t) => {
  const error = t.throws(() => parseManifest('{"format": "libvirt-backup-set", ', '/sets/vm1/manifest.json'), { instanceOf: BackupSetError });
  t.is(error?.code, 'MANIFEST_INVALID');
  t.regex(error!.message, /^\/sets\/vm1\/manifest\.json: not valid JSON/);
});

test('a foreign file and a newer version are refused clearly', (t) => {
  t.is(
    parseMutated((m) => (m.format = 'something-else')),
    `MANIFEST_INVALID manifest.json: format: must be 'libvirt-backup-set', found string "something-else": not a libvirt-backup set manifest`,
  );
  t.is(
    parseMutated((m) => (m.version = 3)),
    'MANIFEST_TOO_NEW manifest.json: format version 3 was written by a newer libvirt-backup (this one reads up to version 2); upgrade libvirt-backup to use this set',
  );
  t.is(
    parseMutated((m) => (m.version = '1')),
    'MANIFEST_INVALID manifest.json: version: must be a positive integer, found string "1"',
  );
  t.regex(
    parseMutated((m) => (m.backups = 'x')),
    /backups: must be an array/,
  );
  t.is(
    (() => {
      try {
        parseManifest('[1,2]');
        return '';
      } catch (error) {
        return (error as Error).message;
      }
    })(),
    'manifest.json: must be an object, found an array',
  );
});

test('quiesced is read and written when present, and a backup without it (written before it was recorded) still reads', (t) => {
  const manifest = validManifest();
  manifest.backups[0]!.quiesced = true;
  manifest.backups[1]!.quiesced = false;
  const read = parseManifest(serializeManifest(manifest));
  t.deepEqual(read, manifest);
  t.deepEqual(
    read.backups.map((backup) => backup.quiesced),
    [true, false, undefined],
  );
  t.false(Object.hasOwn(read.backups[2]!, 'quiesced'));
});

const fieldCases: Array<[string, (manifest: any) => void, string]> = [
  ['quiesced not a boolean', (m) => (m.backups[1].quiesced = 'yes'), 'backups[1].quiesced: must be true or false when present, found string "yes"'],
  ['quiesced null', (m) => (m.backups[0].quiesced = null), 'backups[0].quiesced: must be true or false when present, found null'],
  [
    'checksum too short',
    (m) => (m.backups[2].disks[0].checksum = 'xxh128:abc'),
    'backups[2].disks[0].checksum: must be xxh128: and 32 lowercase hex digits, or sha256: and 64',
  ],
  [
    'checksum without algorithm',
    (m) => (m.backups[2].disks[0].checksum = 'a'.repeat(32)),
    'backups[2].disks[0].checksum: must be xxh128: and 32 lowercase hex digits, or sha256: and 64',
  ],
  [
    'unknown checksum algorithm',
    (m) => (m.backups[2].disks[0].checksum = `md5:${'a'.repeat(32)}`),
    'backups[2].disks[0].checksum: must be xxh128: and 32 lowercase hex digits, or sha256: and 64',
  ],
  ['version 1 field in version 2', (m) => (m.backups[0].disks[0].sha256 = 'a'.repeat(64)), 'backups[0].disks[0].sha256: unknown field'],
  ['missing field', (m) => delete m.backups[1].completedAt, 'backups[1].completedAt: is missing'],
  ['unknown field', (m) => (m.backups[0].disks[0].color = 'red'), 'backups[0].disks[0].color: unknown field'],
  ['bad level', (m) => (m.backups[1].level = 'incremental'), `backups[1].level: must be one of 'full', 'inc', 'diff', found string "incremental"`],
  ['bad transport', (m) => (m.backups[0].transport = 'carrier-pigeon'), `backups[0].transport: must be one of 'pull', 'push', found string "carrier-pigeon"`],
  ['bad id', (m) => (m.backups[0].id = '1'), `backups[0].id: must be a zero-padded number of 4 to 20 digits, like '0001'`],
  ['bad time', (m) => (m.backups[0].startedAt = 'yesterday'), 'backups[0].startedAt: must be an ISO 8601 time like 2024-05-01T02:00:00.000Z'],
  ['time order', (m) => (m.backups[0].completedAt = '2024-05-01T01:00:00.000Z'), 'backups[0].completedAt: must not be before startedAt'],
  ['negative size', (m) => (m.backups[0].disks[0].fileSize = -1), 'backups[0].disks[0].fileSize: must be a non-negative integer, found number -1'],
  ['fractional size', (m) => (m.backups[0].disks[0].virtualSize = 1.5), 'backups[0].disks[0].virtualSize: must be a non-negative integer, found number 1.5'],
  [
    'path as file',
    (m) => (m.backups[0].disks[0].file = '../etc/passwd.qcow2'),
    'backups[0].disks[0].file: must be a file name in the set directory, not a path',
  ],
  [
    'bad target',
    (m) => (m.backups[0].disks[0].target = 'vd a'),
    'backups[0].disks[0].target: must be a disk target name like vda (up to 64 letters, digits, _ and -)',
  ],
  ['uuid', (m) => (m.domain.uuid = 'not-a-uuid'), 'domain.uuid: must be a lowercase UUID like 4dea22b3-1d52-d8f3-2516-782e98ab3fa0'],
  ['empty name', (m) => (m.domain.name = ''), 'domain.name: must not be empty'],
  ['full with parent', (m) => (m.backups[0].parent = '0002'), 'backups[0].parent: must be null for a full backup'],
  ['inc without parent', (m) => (m.backups[1].parent = null), 'backups[1].parent: must name the backup an inc backup is relative to'],
  ['full disk with backing', (m) => (m.backups[0].disks[0].backingFile = 'x.qcow2'), 'backups[0].disks[0].backingFile: must be null for a full disk image'],
  ['unknown parent', (m) => (m.backups[2].parent = '0009'), `backups[2].parent: backup '0009' is not an earlier backup of this set`],
  [
    'inc skipping',
    (m) => {
      m.backups[2].level = 'inc';
      m.backups[2].disks[0].level = 'inc';
    },
    `backups[2].parent: an incremental must be relative to the preceding backup '0002'`,
  ],
  ['diff of an inc', (m) => (m.backups[2].parent = '0002'), `backups[2].parent: a differential must be relative to a full backup, '0002' is inc`],
  [
    'wrong backing',
    (m) => (m.backups[1].disks[0].backingFile = 'vda.0003.diff.qcow2'),
    `backups[1].disks[0].backingFile: must be the parent backup's file 'vda.0001.full.qcow2', found 'vda.0003.diff.qcow2'`,
  ],
  ['duplicate id', (m) => (m.backups[1].id = '0001'), `backups[1].id: duplicate backup id '0001'`],
  ['ids out of order', (m) => (m.backups[1].id = '0005'), `backups[2].id: must be greater than the previous backup's id '0005'`],
  [
    'shared file',
    (m) => (m.backups[2].disks[0].file = 'vda.0002.inc.qcow2'),
    `backups[2].disks[0].file: 'vda.0002.inc.qcow2' is already used by backup '0002'`,
  ],
  ['disk level mismatch', (m) => (m.backups[1].disks[0].level = 'diff'), `backups[1].disks[0].level: must be 'full' or the backup's level 'inc'`],
  ['orphan checkpoint xml', (m) => (m.backups[0].checkpoint = null), 'backups[0].checkpointXml: must be null when checkpoint is null'],
  ['empty disks', (m) => (m.backups[0].disks = []), 'backups[0].disks: must be a non-empty array'],
  ['newline in a file name', (m) => (m.backups[0].disks[0].file = 'vda\n.qcow2'), 'backups[0].disks[0].file: must not contain control characters'],
  [
    'escape sequence in a backing file',
    (m) => (m.backups[1].disks[0].backingFile = '\u001b[2J.qcow2'),
    'backups[1].disks[0].backingFile: must not contain control characters',
  ],
  ['hidden temporary as file', (m) => (m.backups[0].disks[0].file = '.vda.0001.full.qcow2'), 'backups[0].disks[0].file: must not start with a dot'],
  [
    'file name longer than NAME_MAX',
    (m) => (m.backups[0].disks[0].file = `${'x'.repeat(250)}.qcow2`),
    'backups[0].disks[0].file: must be at most 255 bytes long',
  ],
  ['id of 21 digits', (m) => (m.backups[0].id = '1'.repeat(21)), `backups[0].id: must be a zero-padded number of 4 to 20 digits, like '0001'`],
  ['unknown key that is no plain name', (m) => (m.backups[0]['a b\n'] = 1), 'backups[0]["a b\\n"]: unknown field'],
  [
    'long value quoted in part',
    (m) => (m.backups[0].level = 'z'.repeat(10_000)),
    `backups[0].level: must be one of 'full', 'inc', 'diff', found string "${'z'.repeat(60)}…"`,
  ],
];

test('-0, which JSON can spell, reads as 0 so a write and a read keep the manifest', (t) => {
  const text = JSON.stringify(validManifest()).replace('"fileSize":200704', '"fileSize":-0');
  const parsed = parseManifest(text);
  t.true(Object.is(parsed.backups[0]!.disks[0]!.fileSize, 0));
  t.deepEqual(parseManifest(serializeManifest(parsed)), parsed);
});

test('a manifest field found only on Object.prototype is still missing', (t) => {
  const manifest: any = validManifest();
  delete manifest.backups[0].disks[0].checksum;
  Object.defineProperty(Object.prototype, 'checksum', { value: CHECKSUM, configurable: true });
  try {
    t.throws(() => parseManifest(JSON.stringify(manifest)), { message: 'manifest.json: backups[0].disks[0].checksum: is missing' });
  } finally {
    delete (Object.prototype as Record<string, unknown>)['checksum'];
  }
});

test('a version 1 manifest (sha256 checksums) is read and written back as version 2', (t) => {
  const v1: any = validManifest();
  v1.version = 1;
  for (const backup of v1.backups) {
    for (const disk of backup.disks) {
      delete disk.checksum;
      disk.sha256 = 'b'.repeat(64);
    }
  }
  const parsed = parseManifest(JSON.stringify(v1), 'manifest.json');
  t.is(parsed.version, 2);
  t.deepEqual(
    parsed.backups.map((b) => b.disks[0]!.checksum),
    Array(3).fill(`sha256:${'b'.repeat(64)}`),
  );
  t.deepEqual(parseManifest(serializeManifest(parsed), 'manifest.json'), parsed);
  // Version 1 disks must carry sha256, not version 2's field.
  const mixed: any = JSON.parse(JSON.stringify(v1));
  mixed.backups[1].disks[0].checksum = CHECKSUM;
  t.throws(() => parseManifest(JSON.stringify(mixed), 'manifest.json'), { message: 'manifest.json: backups[1].disks[0].checksum: unknown field' });
  const bad: any = JSON.parse(JSON.stringify(v1));
  bad.backups[0].disks[0].sha256 = 'abc';
  t.throws(() => parseManifest(JSON.stringify(bad), 'manifest.json'), {
    message: 'manifest.json: backups[0].disks[0].sha256: must be 64 hex characters (lowercase)',
  });
});

for (const [name, mutate, expected] of fieldCases) {
  test(`invalid field: ${name}`, (t) => {
    t.is(parseMutated(mutate), `MANIFEST_INVALID manifest.json: ${expected}`);
  });
}

test('a failed open changes nothing in the directory', async (t) => {
  const dir = await tempDir(t);
  const text = '{"format":"libvirt-backup-set","version":1,"domain":{},"backups":[]}';
  await writeFile(join(dir, 'manifest.json'), text);
  for (const open of [() => BackupSet.open(dir), () => BackupSet.openForWrite(dir)]) {
    const error = await t.throwsAsync(open(), { instanceOf: BackupSetError });
    t.is(error?.code, 'MANIFEST_INVALID');
    t.is(error?.message, `${join(dir, 'manifest.json')}: domain.name: is missing`);
    t.deepEqual(await readdir(dir), ['manifest.json']);
    t.is(await readFile(join(dir, 'manifest.json'), 'utf8'), text);
  }
});

test('an atomic write that fails before the rename leaves the old file intact and no temp file', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'manifest.json');
  await writeFileAtomic(path, 'old content\n');
  await t.throwsAsync(
    writeFileAtomic(path, 'new content\n', {
      beforeRename: () => {
        throw new Error('disk on fire');
      },
    }),
    { message: 'disk on fire' },
  );
  t.is(await readFile(path, 'utf8'), 'old content\n');
  t.deepEqual(await readdir(dir), ['manifest.json']);
});

test('a manifest write that fails keeps the previous manifest', async (t) => {
  const dir = join(await tempDir(t), 'set');
  const set = await BackupSet.create(dir, DOMAIN);
  t.teardown(() => set.close());
  const before = await readFile(join(dir, 'manifest.json'), 'utf8');
  const renamed = { ...set.manifest, domain: { ...set.manifest.domain, name: 'renamed' } };
  await t.throwsAsync(
    set.writeManifest(renamed, {
      beforeRename: () => {
        throw new Error('injected');
      },
    }),
  );
  t.is(await readFile(join(dir, 'manifest.json'), 'utf8'), before);
  t.is(set.domain.name, 'vm1');
  const invalid = { ...set.manifest, domain: { ...set.manifest.domain, uuid: 'nope' } };
  const error = await t.throwsAsync(set.writeManifest(invalid), { instanceOf: BackupSetError });
  t.is(error?.code, 'MANIFEST_INVALID');
  t.is(await readFile(join(dir, 'manifest.json'), 'utf8'), before);
});
