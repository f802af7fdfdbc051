// The storage XML builders and the domain rewrite for a restore, judged by libvirt's own
// RelaxNG schemas.
import test from 'ava';

import { XmlValidationError, buildStoragePoolXml, buildStorageVolumeXml, parseDomainXml, restoredDomainXml } from '../../src/xml/index.js';
import { SCHEMA_DIR, validateWithXmllint } from './helpers/xmllint.js';

const SAVED = `<domain type='kvm' id='7'>
  <name>web1</name>
  <uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid>
  <memory unit='KiB'>65536</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>
    <nvram>/var/lib/libvirt/qemu/nvram/web1_VARS.fd</nvram>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none'/>
      <source file='/var/lib/libvirt/images/web1-vda.qcow2'/>
      <backingStore type='file'><format type='qcow2'/><source file='/var/lib/libvirt/images/base.qcow2'/><backingStore/></backingStore>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw'/>
      <source dev='/dev/vg0/web1-data'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/libvirt/images/web1-scratch.raw'/>
      <target dev='vdc' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/srv/iso/install.iso'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:12:34:56'/>
      <source network='default'/>
      <model type='virtio'/>
    </interface>
  </devices>
</domain>
`;

test('a restored domain: new name, no UUID or MAC, restored disks on their volumes, unrestored writable disks dropped', async (t) => {
  const rewritten = restoredDomainXml(SAVED, {
    name: 'web1-restored',
    disks: [
      { target: 'vda', pool: 'backups', volume: 'web1-restored-vda.qcow2', format: 'qcow2' },
      { target: 'vdb', pool: 'backups', volume: 'web1-restored-vdb.raw', format: 'raw' },
    ],
  });
  t.deepEqual(rewritten.droppedDisks, ['vdc']);
  t.true(rewritten.droppedNvram);
  const summary = parseDomainXml(rewritten.xml);
  t.is(summary.name, 'web1-restored');
  t.is(summary.uuid, undefined);
  t.deepEqual(
    summary.disks.map((disk) => [disk.type, disk.device ?? 'disk', disk.target?.dev, disk.driver?.type, disk.source, disk.backingStore]),
    [
      ['volume', 'disk', 'vda', 'qcow2', { pool: 'backups', volume: 'web1-restored-vda.qcow2' }, []],
      ['volume', 'disk', 'vdb', 'raw', { pool: 'backups', volume: 'web1-restored-vdb.raw' }, []],
      ['file', 'cdrom', 'sda', 'raw', { file: '/srv/iso/install.iso' }, []],
    ],
  );
  t.notRegex(rewritten.xml, /<mac|<uuid|nvram|id='7'|id="7"/);
  t.regex(rewritten.xml, /cache="none"/);
  const [verdict] = await validateWithXmllint(`${SCHEMA_DIR}/domain.rng`, [rewritten.xml]);
  t.true(verdict!.valid, verdict!.messages.join('\n'));
});

test('the rewrite refuses a disk the domain does not have and a bad name, naming each', (t) => {
  const error = t.throws(() => restoredDomainXml(SAVED, { name: '', disks: [{ target: 'vdz', pool: 'p', volume: 'v', format: 'raw' }] }), {
    instanceOf: XmlValidationError,
  });
  t.deepEqual(
    error.issues.map((issue) => issue.path),
    ['name', 'disks[0].target'],
  );
  t.regex(error.issues[1]!.rule, /the domain has no disk 'vdz'/);
});

test('volume and pool documents are valid by libvirt schemas; bad specs name the field', async (t) => {
  const volumes = [
    buildStorageVolumeXml({ name: 'a.qcow2', capacity: 1024 ** 3, format: 'qcow2', mode: 0o600 }),
    buildStorageVolumeXml({ name: 'b <&> "c".raw', capacity: 0, allocation: 0 }),
    buildStorageVolumeXml({
      name: 'vm-vda.overlay.qcow2',
      capacity: 1024 ** 3,
      format: 'qcow2',
      backingStore: { path: '/srv/set/vda.0002.inc.qcow2', format: 'qcow2' },
    }),
  ];
  for (const verdict of await validateWithXmllint(`${SCHEMA_DIR}/storagevol.rng`, volumes)) t.true(verdict.valid, verdict.messages.join('\n'));
  t.regex(volumes[0]!, /<capacity unit="bytes">1073741824<\/capacity>/);
  t.regex(volumes[0]!, /<mode>0600<\/mode>/);
  t.regex(volumes[2]!, /<backingStore>\s*<path>\/srv\/set\/vda\.0002\.inc\.qcow2<\/path>\s*<format type="qcow2"\/>\s*<\/backingStore>/);
  t.throws(() => buildStorageVolumeXml({ name: 'x', capacity: 1, backingStore: { path: 'set/vda.qcow2', format: 'qcow2' } }), {
    message: /backingStore\.path: must be an absolute path, got 'set\/vda\.qcow2'/,
  });
  const pool = buildStoragePoolXml({ type: 'dir', name: 'restores', path: '/srv/restores', mode: 0o711 });
  const [verdict] = await validateWithXmllint(`${SCHEMA_DIR}/storagepool.rng`, [pool]);
  t.true(verdict!.valid, verdict!.messages.join('\n'));
  t.throws(() => buildStorageVolumeXml({ name: 'x', capacity: -1 }), { message: /capacity: must be a whole number of bytes, got -1/ });
  t.throws(() => buildStorageVolumeXml({ name: 'x', capacity: 1, format: 'qcow2;rm' }), { message: /format: must be a format name/ });
  t.throws(() => buildStoragePoolXml({ type: 'dir', name: 'p', path: 'relative' }), { message: /path: must be an absolute path/ });
});
