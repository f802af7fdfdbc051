// Wrong arguments and wrong receivers are TypeErrors raised before libvirt is called.
import test from 'ava';

import { nativeAddon } from '../../src/libvirt/native.js';
import { connect, Domain } from '../../src/index.js';

const addon = nativeAddon();

test('wrong argument types reject with TypeError before libvirt is called', async (t) => {
  const conn = await connect('test:///default');
  t.teardown(() => conn.close());
  const bad = conn as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
  await t.throwsAsync(bad.lookupDomainByName!.call(conn, 42), { instanceOf: TypeError, message: /"name" argument must be a string/ });
  await t.throwsAsync(bad.lookupDomainByName!.call(conn), { instanceOf: TypeError });
  await t.throwsAsync(bad.defineDomain!.call(conn, { xml: 1 }), { instanceOf: TypeError, message: /"xml"/ });
  await t.throwsAsync(bad.listAllDomains!.call(conn, -1), { instanceOf: TypeError, message: /unsigned 32-bit/ });
  await t.throwsAsync(bad.listAllDomains!.call(conn, 1.5), { instanceOf: TypeError });
  await t.throwsAsync(bad.listAllDomains!.call(conn, '1'), { instanceOf: TypeError, message: /"flags"/ });
  await t.throwsAsync(bad.lookupDomainByName!.call(conn, 'a\0b'), { instanceOf: TypeError, message: /NUL/ });
  const domain = await conn.lookupDomainByName('test');
  const badDomain = domain as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
  await t.throwsAsync(badDomain.qemuMonitorCommand!.call(domain, 5), { instanceOf: TypeError, message: /"command"/ });
  await t.throwsAsync(() => connect(5 as unknown as string), { instanceOf: TypeError });
});

test('the native layer throws TypeError synchronously on wrong arguments', async (t) => {
  const native = await addon.open('test:///default', 0);
  t.teardown(() => native.close());
  const bad = native as unknown as Record<string, (...args: unknown[]) => unknown>;
  t.throws(() => bad.lookupDomainByName!.call(native, 42), { instanceOf: TypeError });
  t.throws(() => bad.getDomainCapabilities!.call(native, 1), { instanceOf: TypeError, message: /"emulatorbin"/ });
  t.throws(() => (addon.open as unknown as (a: unknown) => unknown)(7), { instanceOf: TypeError, message: /"uri"/ });
});

test('native methods called on the wrong receiver throw TypeError', async (t) => {
  const native = await addon.open('test:///default', 0);
  t.teardown(() => native.close());
  const nativeDomain = await native.lookupDomainByName('test');
  const getState = nativeDomain.getState as unknown as (this: unknown) => unknown;
  const listAll = native.listAllDomains as unknown as (this: unknown) => unknown;
  for (const receiver of [native, {}, null, undefined, 1, 'x', Object.create(nativeDomain)]) {
    t.throws(() => getState.call(receiver), { instanceOf: TypeError, message: /receiver is not a Domain/ });
  }
  t.throws(() => listAll.call(nativeDomain), { instanceOf: TypeError, message: /receiver is not a Connection/ });
  // The TS wrappers keep their handle in a private field: a foreign receiver is a TypeError too.
  await t.throwsAsync(Domain.prototype.getXMLDesc.call({} as Domain), { instanceOf: TypeError });
});

test('handles cannot be constructed from JS', (t) => {
  const Ctor = addon.Domain as unknown as new (...args: unknown[]) => unknown;
  t.throws(() => new Ctor(), { instanceOf: TypeError, message: /Illegal constructor/ });
  t.throws(() => new Ctor({}, {}), { instanceOf: TypeError, message: /Illegal constructor/ });
  const Conn = addon.Connection as unknown as new (...args: unknown[]) => unknown;
  t.throws(() => new Conn('qemu:///system'), { instanceOf: TypeError, message: /Illegal constructor/ });
});
