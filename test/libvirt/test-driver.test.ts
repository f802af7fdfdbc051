// The in-process test driver: no daemon, fresh state per connection.
import test from 'ava';

import { connect, DomainState, LibvirtError, ListDomainsFlags } from '../../src/index.js';

test('connects, lists and looks up the test domain', async (t) => {
  const conn = await connect('test:///default');
  t.teardown(() => conn.close());
  t.is(await conn.getURI(), 'test:///default');
  t.true(await conn.isAlive());
  t.true((await conn.getLibVersion()) >= 6_000_000);
  t.is(typeof (await conn.getHostname()), 'string');
  t.regex(await conn.getCapabilities(), /<capabilities>/);

  // The test driver's state is shared by every connection in the process, and
  // other tests define domains there too: look for ours, not for an exact list.
  const domains = await conn.listAllDomains();
  t.true(domains.some((d) => d.name === 'test'));
  const active = await conn.listAllDomains(ListDomainsFlags.ACTIVE);
  t.true(active.some((d) => d.name === 'test'));
  const inactive = await conn.listAllDomains(ListDomainsFlags.INACTIVE);
  t.false(inactive.some((d) => d.name === 'test'));

  const domain = await conn.lookupDomainByName('test');
  t.is(domain.name, 'test');
  t.regex(domain.uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  const byUuid = await conn.lookupDomainByUUID(domain.uuid);
  t.is(byUuid.name, 'test');
  const xml = await domain.getXMLDesc();
  t.regex(xml, /<name>test<\/name>/);
  t.deepEqual((await domain.getState()).state, DomainState.RUNNING);
  t.true(await domain.isActive());
  t.is(typeof (await domain.getId()), 'number');
});

test('a missing domain rejects with VIR_ERR_NO_DOMAIN', async (t) => {
  const conn = await connect('test:///default');
  t.teardown(() => conn.close());
  const error = await t.throwsAsync(conn.lookupDomainByName('no-such-domain'), { instanceOf: LibvirtError });
  t.is(error?.codeName, 'VIR_ERR_NO_DOMAIN');
  t.is(error?.code, 42);
  t.is(error?.domainName, 'VIR_FROM_TEST');
  t.is(error?.levelName, 'ERROR');
  t.regex(error?.message ?? '', /not found/i);
  const byUuid = await t.throwsAsync(conn.lookupDomainByUUID('00000000-0000-0000-0000-000000000000'), {
    instanceOf: LibvirtError,
  });
  t.is(byUuid?.codeName, 'VIR_ERR_NO_DOMAIN');
  const badUuid = await t.throwsAsync(conn.lookupDomainByUUID('not-a-uuid'), { instanceOf: LibvirtError });
  t.is(badUuid?.codeName, 'VIR_ERR_INVALID_ARG');
});

test('define, start, destroy and undefine on the test driver', async (t) => {
  const conn = await connect('test:///default');
  t.teardown(() => conn.close());
  const name = `lvb-define-${process.pid}`;
  const xml = "<domain type='test'><name>lvb-define</name><memory>65536</memory><os><type>hvm</type></os></domain>";
  const domain = await conn.defineDomain(xml.replace('lvb-define', name));
  t.false(await domain.isActive());
  t.true(await domain.isPersistent());
  t.is(await domain.getId(), null);
  await domain.start();
  t.is((await domain.getState()).state, DomainState.RUNNING);
  await domain.destroy();
  t.is((await domain.getState()).state, DomainState.SHUTOFF);
  await domain.undefine();
  const gone = await t.throwsAsync(conn.lookupDomainByName(name), { instanceOf: LibvirtError });
  t.is(gone?.codeName, 'VIR_ERR_NO_DOMAIN');

  const transient = await conn.createDomain(xml.replace('lvb-define', `${name}-transient`));
  t.true(await transient.isActive());
  t.false(await transient.isPersistent());
  await transient.destroy();
});

test("invalid XML rejects with libvirt's own message", async (t) => {
  const conn = await connect('test:///default');
  t.teardown(() => conn.close());
  const error = await t.throwsAsync(conn.defineDomain('<domain'), { instanceOf: LibvirtError });
  t.is(error?.codeName, 'VIR_ERR_XML_DETAIL');
  t.truthy(error?.message);
});

test('opening an unknown URI rejects with a LibvirtError', async (t) => {
  const error = await t.throwsAsync(connect('nosuchdriver:///x'), { instanceOf: LibvirtError });
  t.is(error?.codeName, 'VIR_ERR_NO_CONNECT');
});
