import test from 'ava';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { checkpointDisksFor, classifyCheckpointDisks, parseCheckpointXml, parseDomainXml } from '../../src/xml/index.js';

const DOMAIN = `<domain type='kvm' id='3'>
  <name>web &amp; db</name>
  <uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/top.qcow2' index='3'/>
      <backingStore type='file' index='2'>
        <format type='qcow2'/>
        <source file='/var/lib/libvirt/images/mid.qcow2'/>
        <backingStore type='block' index='1'>
          <format type='raw'/>
          <source dev='/dev/vg/base'/>
          <backingStore/>
        </backingStore>
      </backingStore>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/libvirt/images/data.raw'/>
      <target dev='vdb' bus='virtio'/>
      <shareable/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source protocol='nbd' name='export'>
        <host name='storage.example' port='10809'/>
        <host transport='unix' socket='/run/nbd.sock'/>
      </source>
      <target dev='vdc' bus='virtio'/>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source protocol='https' name='/images/base.qcow2'>
        <host name='mirror.example' port='443'/>
      </source>
      <target dev='vdd' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/golden.qcow2'/>
      <target dev='vde' bus='virtio'/>
      <readonly/>
    </disk>
    <interface type='network'><source network='default'/></interface>
  </devices>
</domain>`;

test('name, uuid and disks are typed', (t) => {
  const domain = parseDomainXml(DOMAIN);
  t.is(domain.type, 'kvm');
  t.is(domain.name, 'web & db');
  t.is(domain.uuid, '4dea22b3-1d52-d8f3-2516-782e98ab3fa0');
  t.is(domain.disks.length, 6);
  t.deepEqual(domain.disks[0], {
    type: 'file',
    device: 'disk',
    driver: { name: 'qemu', type: 'qcow2' },
    source: { file: '/var/lib/libvirt/images/top.qcow2' },
    target: { dev: 'vda', bus: 'virtio' },
    backingStore: [
      { type: 'file', index: 2, format: 'qcow2', source: { file: '/var/lib/libvirt/images/mid.qcow2' } },
      { type: 'block', index: 1, format: 'raw', source: { dev: '/dev/vg/base' } },
    ],
    readonly: false,
    shareable: false,
  });
  t.true(domain.disks[1]!.shareable);
  t.true(domain.disks[2]!.readonly);
  t.is(domain.disks[2]!.source, undefined);
  t.deepEqual(domain.disks[3]!.source, {
    protocol: 'nbd',
    name: 'export',
    hosts: [
      { name: 'storage.example', port: 10809 },
      { transport: 'unix', socket: '/run/nbd.sock' },
    ],
  });
});

test('which disks can take a checkpoint bitmap', (t) => {
  const { bitmap, excluded } = classifyCheckpointDisks(DOMAIN);
  t.deepEqual(
    bitmap.map((disk) => disk.target?.dev),
    ['vda'],
  );
  t.deepEqual(
    excluded.map(({ disk, reason }) => [disk.target?.dev, reason]),
    [
      ['vdb', "format 'raw' cannot store bitmaps; qcow2 is required"],
      ['sda', "device 'cdrom' holds no guest data to track"],
      ['vdc', "network disks (protocol 'nbd') are not enabled for bitmaps"],
      ['vdd', "network protocol 'https' is read-only"],
      ['vde', 'disk is read-only'],
    ],
  );
  const withNetwork = classifyCheckpointDisks(DOMAIN, { allowNetwork: true });
  t.deepEqual(
    withNetwork.bitmap.map((disk) => disk.target?.dev),
    ['vda', 'vdc'],
  );
});

test('checkpointDisksFor lists every disk in domain order', (t) => {
  t.deepEqual(checkpointDisksFor(parseDomainXml(DOMAIN)), [
    { name: 'vda', checkpoint: 'bitmap' },
    { name: 'vdb', checkpoint: 'no' },
    { name: 'sda', checkpoint: 'no' },
    { name: 'vdc', checkpoint: 'no' },
    { name: 'vdd', checkpoint: 'no' },
    { name: 'vde', checkpoint: 'no' },
  ]);
});

test('the checkpoint redefine example: raw disk and cdrom are excluded, qcow2 disks are not', (t) => {
  const xml = readFileSync(fileURLToPath(new URL('./fixtures/checkpoint/tests-redefine.xml', import.meta.url)), 'utf8');
  const domain = parseCheckpointXml(xml).domain!;
  t.deepEqual(
    checkpointDisksFor(domain),
    parseCheckpointXml(xml).disks!.map(({ name, checkpoint }) => ({ name, checkpoint: checkpoint! })),
  );
});

test('src/xml imports nothing outside itself but the XML library and node builtins', (t) => {
  const dir = fileURLToPath(new URL('../../src/xml/', import.meta.url));
  for (const file of readdirSync(dir).filter((name) => name.endsWith('.ts'))) {
    const source = readFileSync(`${dir}${file}`, 'utf8');
    for (const [, specifier] of source.matchAll(/(?:from|import)\s*\(?\s*'([^']+)'/g)) {
      t.true(specifier!.startsWith('./') || specifier === '@xmldom/xmldom' || specifier!.startsWith('node:'), `${file} imports ${specifier}`);
      t.false(specifier!.includes('..'), `${file} reaches outside src/xml via ${specifier}`);
    }
    t.false(/require\(|\.node['"]|node-gyp-build|process\.dlopen/.test(source), `${file} may load native code`);
  }
});
