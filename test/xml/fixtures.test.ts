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
import { writeBackupXml } from '../../src/xml/backup.js';
import { writeCheckpointXml } from '../../src/xml/checkpoint.js';

const fixtureDir = fileURLToPath(new URL('./fixtures/', import.meta.url));
const read = (kind: string, name: string): string => readFileSync(`${fixtureDir}${kind}/${name}`, 'utf8');
const list = (kind: string): string[] =>
  readdirSync(`${fixtureDir}${kind}`)
    .filter((name) => name.endsWith('.xml'))
    .sort();

// Parsing is the contract for what libvirt reports, so every example must
// survive parse -> write -> parse, whatever the builders (the contract for
// what libvirt accepts) say about it; fixtures-as-input.test.ts asks them.
for (const kind of ['backup', 'checkpoint'] as const) {
  const parse = kind === 'backup' ? parseBackupXml : parseCheckpointXml;
  const write = (spec: unknown): string => (kind === 'backup' ? writeBackupXml(spec as BackupSpec) : writeCheckpointXml(spec as CheckpointSpec));
  for (const name of list(kind)) {
    test(`${kind} example ${name} reads back the same after writing`, (t) => {
      const spec = parse(read(kind, name));
      const written = write(spec);
      t.deepEqual(parse(written), spec);
      t.is(write(parse(written)), written, 'writing is stable');
    });
  }
}

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

test("libvirt's status XML is read and kept, and the builder refuses each piece of it", (t) => {
  const spec = parseBackupXml(read('backup', 'tests-pull-internal.xml'));
  t.deepEqual(spec.disks?.[0]?.extra, { attributes: { state: 'running' } });
  t.is(spec.extra?.elements?.length, 1);
  const written = writeBackupXml(spec);
  t.regex(written, /<disk name="vda" backup="yes" type="file" exportname="test-vda" exportbitmap="blah" state="running">/);
  t.regex(written, /<privateData>\s*<objects>\s*<secret type="tlskey" alias="test-tlskey"\/>\s*<TLSx509 alias="test-tlsobj"\/>/);
  const error = t.throws(() => buildBackupXml(spec), { instanceOf: XmlValidationError });
  t.deepEqual(error?.issues, [
    { path: 'disks[0].extra.attributes.state', rule: "output-only (libvirt's status XML), libvirt refuses it in virDomainBackupBegin input" },
    { path: 'disks[1].extra.attributes.state', rule: "output-only (libvirt's status XML), libvirt refuses it in virDomainBackupBegin input" },
    { path: 'extra.elements[0]', rule: "<privateData> is output-only (libvirt's status XML), libvirt refuses it in virDomainBackupBegin input" },
  ]);
});

test("a running backup as libvirt 9.0 reports it: the image's index is read, and refused as input", (t) => {
  const spec = parseBackupXml(read('backup', 'daemon-9.0-pull-running.xml'));
  t.deepEqual(spec.disks?.[0], {
    name: 'vda',
    backup: 'yes',
    type: 'file',
    backupmode: 'incremental',
    incremental: 'c1',
    exportname: 'vda',
    exportbitmap: 'backup-vda',
    index: 3,
    driver: { type: 'qcow2' },
    scratch: { file: '/var/tmp/backup/vda.scratch' },
  });
  const error = t.throws(() => buildBackupXml(spec), { instanceOf: XmlValidationError });
  t.is(error?.message, 'disks[0].index: output-only (backupGetXMLDesc reports it), libvirt refuses it in virDomainBackupBegin input');
  const { index: _index, ...withoutIndex } = spec.disks![0]!;
  t.notThrows(() => buildBackupXml({ ...spec, disks: [withoutIndex, ...spec.disks!.slice(1)] } as BackupSpec), 'the rest is valid input');
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

test("the embedded domain is kept whole; libvirt's internal <active> is kept, and refused as input", (t) => {
  const spec = parseCheckpointXml(read('checkpoint', 'tests-internal-active.xml'));
  t.deepEqual(spec.extra, { elements: ['<active>1</active>'] });
  t.is(spec.domain?.name, 'QEMUGuest1');
  const written = writeCheckpointXml(spec);
  t.true(written.includes('<active>1</active>'));
  t.true(written.includes('<type arch="i686" machine="pc">hvm</type>'));
  t.true(written.includes('<emulator>/usr/bin/qemu-system-i386</emulator>'));
  for (const redefine of [true, false, undefined]) {
    const error = t.throws(() => buildCheckpointXml(spec, { redefine }), { instanceOf: XmlValidationError });
    t.true(
      error?.issues.some(
        (issue) =>
          issue.path === 'extra.elements[0]' &&
          issue.rule === "<active> is output-only (libvirt's internal checkpoint metadata), libvirt refuses it in virDomainCheckpointCreateXML input",
      ),
      `redefine: ${String(redefine)}`,
    );
  }
});
