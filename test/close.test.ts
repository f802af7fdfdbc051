import test from 'ava';

import { connect, LibvirtError } from '../src/index.js';

test('after close(), calls on the connection and its domains reject cleanly', async (t) => {
  const conn = await connect('test:///default');
  const domain = await conn.lookupDomainByName('test');
  const inFlight = domain.getXMLDesc();
  await conn.close();
  t.true(conn.closed);
  // A call queued before close() still completes: close waits for it.
  t.regex(await inFlight, /<domain/);
  const calls: Array<Promise<unknown>> = [
    conn.getURI(),
    conn.listAllDomains(),
    conn.lookupDomainByName('test'),
    domain.getState(),
    domain.getXMLDesc(),
    domain.destroy(),
  ];
  for (const call of calls) {
    const error = await t.throwsAsync(call, { instanceOf: LibvirtError });
    t.is(error?.codeName, 'VIR_ERR_INVALID_CONN');
    t.regex(error?.message ?? '', /connection is closed/);
  }
  t.false(await conn.isAlive());
  // Local properties stay readable.
  t.is(domain.name, 'test');
  await t.notThrowsAsync(conn.close());
});

test('a lookup that completes after close() rejects instead of returning a dead handle', async (t) => {
  const conn = await connect('test:///default');
  const pending = conn.lookupDomainByName('test');
  const closing = conn.close();
  const outcome = await pending.then(
    (domain) => ({ domain }),
    (error: unknown) => ({ error }),
  );
  await closing;
  if ('domain' in outcome) {
    // The lookup finished before close() ran: the handle must now be closed too.
    const error = await t.throwsAsync(outcome.domain.getState(), { instanceOf: LibvirtError });
    t.is(error?.codeName, 'VIR_ERR_INVALID_CONN');
  } else {
    t.true(outcome.error instanceof LibvirtError);
    t.is((outcome.error as LibvirtError).codeName, 'VIR_ERR_INVALID_CONN');
  }
});
