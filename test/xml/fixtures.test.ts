import test from 'ava';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  buildBackupXml,
  buildCheckpointXml,
  parseBackupXml,
  parseCheckpointXml,
  XmlValidationError,
  type BackupSpec,
  type CheckpointSpec,
} from '../../src/xml/index.js';
import { BACKUP_SCHEMA, CHECKPOINT_SCHEMA, validateWithXmllint } from './helpers/xmllint.js';

const fixtureDir = fileURLToPath(new URL('./fixtures/', import.meta.url));
const read = (kind: string, name: string): string => readFileSync(`${fixtureDir}${kind}/${name}`, 'utf8');
const list = (kind: string): string[] => readdirSync(`${fixtureDir}${kind}`).filter((name) => name.endsWith('.xml')).sort();

/** Examples that use features of newer libvirt than 9.0, and the version they need. */
const NEEDS_VERSION: Record<string, number> = {
  'doc-push-full.xml': 11_000_000,
  'tests-pull-fd.xml': 11_003_000,
};

for (const name of list('backup')) {
  test(`backup example ${name} parses and rebuilds to the same typed value`, (t) => {
    const spec = parseBackupXml(read('backup', name));
    const rebuilt = buildBackupXml(spec, { libvirtVersion: NEEDS_VERSION[name] });
    t.deepEqual(parseBackupXml(rebuilt), spec);
    t.is(buildBackupXml(parseBackupXml(rebuilt), { libvirtVersion: NEEDS_VERSION[name] }), rebuilt, 'rebuilding is stable');
  });
}

for (const name of list('checkpoint')) {
  test(`checkpoint example ${name} parses and rebuilds to the same typed value`, (t) => {
    const spec = parseCheckpointXml(read('checkpoint', name));
    const rebuilt = buildCheckpointXml(spec);
    t.deepEqual(parseCheckpointXml(rebuilt), spec);
    t.is(buildCheckpointXml(parseCheckpointXml(rebuilt)), rebuilt, 'rebuilding is stable');
  });
}

test('rebuilt examples that libvirt 9.0 accepts still validate against its schemas', async (t) => {
  // Only these carry things outside the 9.0 schema: newer features, libvirt's
  // internal state, or the documentation's "..." placeholders.
  const outsideSchema = new Set(['doc-push-full.xml', 'tests-pull-fd.xml', 'tests-pull-internal.xml', 'doc-getxmldesc.xml', 'tests-internal-active.xml']);
  const backups = list('backup').filter((name) => !outsideSchema.has(name));
  const checkpoints = list('checkpoint').filter((name) => !outsideSchema.has(name));
  const backupVerdicts = await validateWithXmllint(
    BACKUP_SCHEMA,
    backups.map((name) => buildBackupXml(parseBackupXml(read('backup', name)))),
  );
  const checkpointVerdicts = await validateWithXmllint(
    CHECKPOINT_SCHEMA,
    checkpoints.map((name) => buildCheckpointXml(parseCheckpointXml(read('checkpoint', name)))),
  );
  backups.forEach((name, index) => t.true(backupVerdicts[index]!.valid, `${name}: ${backupVerdicts[index]!.messages.join('\n')}`));
  checkpoints.forEach((name, index) => t.true(checkpointVerdicts[index]!.valid, `${name}: ${checkpointVerdicts[index]!.messages.join('\n')}`));
});

test('documentation push example: typed values', (t) => {
  const spec = parseBackupXml(read('backup', 'doc-push-full.xml'));
  const expected: BackupSpec = {
    mode: 'push',
    disks: [
      { name: 'vda', backup: 'yes' },
      { name: 'vdb', type: 'file', driver: { type: 'raw' }, target: { file: '/path/to/vdb.backup' } },
      { name: 'vdc', backup: 'no' },
    ],
  };
  t.deepEqual(spec, expected);
});

test('documentation push example needs libvirt 11 because vda has no type', (t) => {
  const spec = parseBackupXml(read('backup', 'doc-push-full.xml'));
  const error = t.throws(() => buildBackupXml(spec), { instanceOf: XmlValidationError });
  t.is(error?.message, "disks[0].type: push disks need type 'file' or 'block' on libvirt < 11");
  t.is(error?.path, 'disks[0].type');
});

test('documentation pull example: typed values', (t) => {
  const spec = parseBackupXml(read('backup', 'doc-pull-incremental.xml'));
  const expected: BackupSpec = {
    mode: 'pull',
    incremental: '1525889631',
    server: { transport: 'unix', socket: '/path/to/server' },
    disks: [{ name: 'vda', backup: 'yes', type: 'file', scratch: { file: '/path/to/file1.scratch' } }],
  };
  t.deepEqual(spec, expected);
});

test('a backup without mode is push', (t) => {
  t.deepEqual(parseBackupXml('<domainbackup/>'), { mode: 'push' });
});

test('libvirt output: backupmode, incremental and generated targets are read', (t) => {
  const spec = parseBackupXml(read('backup', 'tests-push-out.xml'));
  t.is(spec.mode, 'push');
  t.deepEqual(spec.disks?.[0], {
    name: 'vda',
    backup: 'yes',
    type: 'file',
    backupmode: 'incremental',
    incremental: '1525889631',
    driver: { type: 'raw' },
    target: { file: '/path/to/file' },
  });
  t.deepEqual(spec.disks?.[1], { name: 'vdb', backup: 'yes', type: 'file', backupmode: 'full', target: { file: '/fake/vdb.qcow2.SUFFIX' } });
});

test('encryption and seclabels are typed', (t) => {
  const spec = parseBackupXml(read('backup', 'tests-pull-encrypted.xml'));
  t.is(spec.mode, 'pull');
  if (spec.mode !== 'pull') return;
  t.deepEqual(spec.server, { transport: 'tcp', name: 'localhost', port: 10809 });
  t.deepEqual(spec.disks?.[0]?.scratch?.encryption, {
    format: 'luks',
    secret: { type: 'passphrase', uuid: '0a81f5b2-8403-7b23-c8d6-21ccc2f80d6f' },
  });
  t.deepEqual(spec.disks?.[2]?.scratch?.dev, '/dev/block');
  const seclabels = parseBackupXml(read('backup', 'tests-push-seclabel.xml'));
  t.deepEqual(seclabels.mode === 'push' ? seclabels.disks?.[1]?.target : undefined, {
    dev: '/dev/block',
    seclabels: [{ model: 'dac', relabel: 'no' }],
  });
});

test('what the backup model does not know is kept through parse -> build', (t) => {
  const xml = read('backup', 'tests-pull-internal.xml');
  const spec = parseBackupXml(xml);
  t.deepEqual(spec.disks?.[0]?.extra, { attributes: { state: 'running' } });
  t.is(spec.extra?.elements?.length, 1);
  const rebuilt = buildBackupXml(spec);
  t.regex(rebuilt, /<disk name="vda" backup="yes" type="file" exportname="test-vda" exportbitmap="blah" state="running">/);
  t.regex(rebuilt, /<privateData>\s*<objects>\s*<secret type="tlskey" alias="test-tlskey"\/>\s*<TLSx509 alias="test-tlsobj"\/>/);
});

test('documentation checkpoint examples: typed values', (t) => {
  const created: CheckpointSpec = {
    description: 'Completion of updates after OS install',
    disks: [
      { name: 'vda', checkpoint: 'bitmap' },
      { name: 'vdb', checkpoint: 'no' },
    ],
  };
  t.deepEqual(parseCheckpointXml(read('checkpoint', 'doc-create.xml')), created);
  const described = parseCheckpointXml(read('checkpoint', 'doc-getxmldesc.xml'));
  t.is(described.name, '1525889631');
  t.is(described.parent, '1525111885');
  t.is(described.creationTime, 1525889631);
  t.deepEqual(described.disks, [
    { name: 'vda', checkpoint: 'bitmap', bitmap: '1525889631' },
    { name: 'vdb', checkpoint: 'no' },
  ]);
  t.is(described.domain?.name, 'fedora');
  t.is(described.domain?.uuid, '93a5c045-6457-2c09-e56c-927cdf34e178');
  t.deepEqual(
    described.domain?.disks.map((disk) => [disk.target?.dev, disk.driver?.type, disk.source?.file]),
    [
      ['vda', 'qcow2', '/path/to/file1'],
      ['vdb', 'raw', '/path/to/file2'],
    ],
  );
});

test('checkpoint size from the SIZE flag is a number', (t) => {
  const spec = parseCheckpointXml(read('checkpoint', 'tests-size-out.xml'));
  t.deepEqual(spec.disks, [{ name: 'vda', checkpoint: 'bitmap', bitmap: 'c2', size: 1048576 }]);
});

test('a disk without checkpoint attribute stays without it (libvirt defaults it to bitmap)', (t) => {
  t.deepEqual(parseCheckpointXml(read('checkpoint', 'tests-disk-default.xml')).disks, [{ name: 'vda' }]);
});

test('the embedded domain is kept whole, and unknown checkpoint elements too', (t) => {
  const xml = read('checkpoint', 'tests-internal-active.xml');
  const spec = parseCheckpointXml(xml);
  t.deepEqual(spec.extra, { elements: ['<active>1</active>'] });
  const rebuilt = buildCheckpointXml(spec);
  t.true(rebuilt.includes('<active>1</active>'));
  t.true(rebuilt.includes("<type arch=\"i686\" machine=\"pc\">hvm</type>"));
  t.true(rebuilt.includes('<emulator>/usr/bin/qemu-system-i386</emulator>'));
  t.is(spec.domain?.name, 'QEMUGuest1');
});
