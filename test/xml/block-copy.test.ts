// The block copy destination: what each kind builds, and what is refused by field.
import test from 'ava';

import { buildBlockCopyDestinationXml, XmlValidationError } from '../../src/xml/index.js';

test('file, block and volume destinations build the <disk> libvirt expects', (t) => {
  t.is(
    buildBlockCopyDestinationXml({ type: 'file', path: "/images/a&b'.qcow2", format: 'qcow2' }),
    `<disk type="file">\n  <driver type="qcow2"/>\n  <source file="/images/a&amp;b'.qcow2"/>\n</disk>\n`,
  );
  t.is(buildBlockCopyDestinationXml({ type: 'block', dev: '/dev/vg/lv' }), `<disk type="block">\n  <source dev="/dev/vg/lv"/>\n</disk>\n`);
  t.is(
    buildBlockCopyDestinationXml({ type: 'volume', pool: 'fast', volume: 'vm-vda', format: 'raw' }),
    `<disk type="volume">\n  <driver type="raw"/>\n  <source pool="fast" volume="vm-vda"/>\n</disk>\n`,
  );
});

test('bad destinations are refused, naming every field', (t) => {
  const error = t.throws(() => buildBlockCopyDestinationXml({ type: 'volume', pool: 'a/b', volume: '', format: 'Q C' }), { instanceOf: XmlValidationError });
  t.deepEqual(
    error!.issues.map((issue) => issue.path),
    ['pool', 'volume', 'format'],
  );
  t.throws(() => buildBlockCopyDestinationXml({ type: 'network' } as never), { message: /^type: must be 'file', 'block' or 'volume'/ });
  t.throws(() => buildBlockCopyDestinationXml({ type: 'block', dev: 'sdb' }), { message: /^dev: must be an absolute path/ });
});
