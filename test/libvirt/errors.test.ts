// A LibvirtError says where it was asked for (the async functions awaiting the
// call, as V8's async stack traces give them when it fails) and which libvirt
// function failed.
import test from 'ava';

import { connect, type Connection, ErrorDomain, LibvirtError } from '../../src/index.js';

async function lookUpAMissingDomain(conn: Connection): Promise<unknown> {
  const domain = await conn.lookupDomainByName('no-such-domain');
  return domain;
}

async function startTheRunningDomain(conn: Connection): Promise<unknown> {
  const domain = await conn.lookupDomainByName('test');
  await domain.start();
  return domain;
}

async function lookUpAMissingCheckpoint(conn: Connection): Promise<unknown> {
  const domain = await conn.lookupDomainByName('test');
  const checkpoint = await domain.lookupCheckpointByName('no-such-checkpoint');
  return checkpoint;
}

async function callAfterClose(conn: Connection): Promise<unknown> {
  return conn.getHostname();
}

test('a failed call carries its caller in the stack and the libvirt function in operation and message', async (t) => {
  const conn = await connect('test:///default');
  t.teardown(() => conn.close());
  const cases: Array<[(c: Connection) => Promise<unknown>, string, string]> = [
    [lookUpAMissingDomain, 'lookUpAMissingDomain', 'virDomainLookupByName'],
    [startTheRunningDomain, 'startTheRunningDomain', 'virDomainCreateWithFlags'],
    [lookUpAMissingCheckpoint, 'lookUpAMissingCheckpoint', 'virDomainCheckpointLookupByName'],
  ];
  for (const [call, caller, operation] of cases) {
    const error = await t.throwsAsync(call(conn), { instanceOf: LibvirtError });
    t.is(error?.operation, operation);
    t.true(error!.message.endsWith(` (${operation})`), error!.message);
    t.regex(error!.stack ?? '', new RegExp(`^LibvirtError: .*\\(${operation}\\)\\n`), 'the stack starts with the message');
    t.regex(error!.stack ?? '', new RegExp(`at (async )?${caller} `), `${caller} is in the stack:\n${error!.stack}`);
    t.regex(error!.stack ?? '', /errors\.test\.ts:\d+:\d+/);
  }
});

test("the error source has names that cannot be read as a VM, equal to libvirt's domain fields", async (t) => {
  const conn = await connect('test:///default');
  t.teardown(() => conn.close());
  const error = await t.throwsAsync(lookUpAMissingDomain(conn), { instanceOf: LibvirtError });
  t.is(error?.codeName, 'VIR_ERR_NO_DOMAIN');
  t.is(error?.source, error?.domain);
  t.is(error?.sourceName, error?.domainName);
  t.is(error!.sourceName, ErrorDomain[error!.source] ?? 'unnamed');
  t.true(error!.sourceName.startsWith('VIR_FROM_'));
});

test('a call on a closed connection names the call once and carries its caller', async (t) => {
  const conn = await connect('test:///default');
  await conn.close();
  const error = await t.throwsAsync(callAfterClose(conn), { instanceOf: LibvirtError });
  t.is(error?.codeName, 'VIR_ERR_INVALID_CONN');
  t.is(error?.operation, 'virConnectGetHostname');
  t.is(error?.message, 'virConnectGetHostname: the connection is closed');
  t.regex(error!.stack ?? '', /at (async )?callAfterClose /);
});

test('errors built by hand keep their message and have no operation', (t) => {
  const error = new LibvirtError({ code: 1, domain: 10, level: 2, message: 'boom', str1: null, str2: null, str3: null, int1: -1, int2: -1 });
  t.is(error.message, 'boom');
  t.is(error.operation, null);
  t.is(error.sourceName, 'VIR_FROM_QEMU');
});
