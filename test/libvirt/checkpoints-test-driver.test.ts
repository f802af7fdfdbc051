// Checkpoint calls on the in-process test driver (no daemon, no QEMU).
import test from 'ava';

import { CheckpointListFlags, CheckpointXMLFlags, connect, LibvirtError } from '../../src/index.js';
import { parseCheckpointXml } from '../../src/xml/index.js';

test('create, list, parent, children and delete on test:///default', async (t) => {
  const conn = await connect('test:///default');
  t.teardown(() => conn.close());
  const support = await conn.getBackupSupport();
  t.deepEqual(support, { checkpoints: true, backups: false, reason: "libvirt's test driver implements checkpoints but not backups" });
  const domain = await conn.lookupDomainByName('test');
  const prefix = `td${process.pid}`;
  const a = await domain.createCheckpoint(`<domaincheckpoint><name>${prefix}a</name></domaincheckpoint>`);
  const b = await domain.createCheckpoint({ name: `${prefix}b`, description: 'second & last' });
  t.is(a.name, `${prefix}a`);
  t.is((await b.getParent())?.name, `${prefix}a`);
  t.is(await a.getParent(), null);
  t.deepEqual(
    (await a.listAllChildren()).map((c) => c.name),
    [`${prefix}b`],
  );
  const ours = (await domain.listAllCheckpoints(CheckpointListFlags.TOPOLOGICAL)).map((c) => c.name).filter((n) => n.startsWith(prefix));
  t.deepEqual(ours, [`${prefix}a`, `${prefix}b`]);
  const spec = parseCheckpointXml(await b.getXMLDesc(CheckpointXMLFlags.SIZE));
  t.is(spec.description, 'second & last');
  t.is(spec.parent, `${prefix}a`);
  await b.delete();
  t.deepEqual(
    (await a.listAllChildren()).map((c) => c.name),
    [],
  );
  await a.delete();
  const error = await t.throwsAsync(domain.lookupCheckpointByName(`${prefix}a`), { instanceOf: LibvirtError });
  t.is(error?.codeName, 'VIR_ERR_NO_DOMAIN_CHECKPOINT');
});

test('backup calls on test:///default reject with VIR_ERR_NO_SUPPORT', async (t) => {
  const conn = await connect('test:///default');
  t.teardown(() => conn.close());
  const domain = await conn.lookupDomainByName('test');
  const begin = await t.throwsAsync(domain.backupBegin("<domainbackup mode='push'><disks><disk name='vda' backup='no'/></disks></domainbackup>"), {
    instanceOf: LibvirtError,
  });
  t.is(begin?.codeName, 'VIR_ERR_NO_SUPPORT');
  const xml = await t.throwsAsync(domain.backupGetXMLDesc(), { instanceOf: LibvirtError });
  t.is(xml?.codeName, 'VIR_ERR_NO_SUPPORT');
  await t.throwsAsync(conn.assertBackupSupport(), { message: /test driver implements checkpoints but not backups/ });
});

test('invalid checkpoint specs are refused before libvirt sees them', async (t) => {
  const conn = await connect('test:///default');
  t.teardown(() => conn.close());
  const domain = await conn.lookupDomainByName('test');
  await t.throwsAsync(domain.createCheckpoint({ name: 'bad name/with slash' }), { message: /^name: must match/ });
});
