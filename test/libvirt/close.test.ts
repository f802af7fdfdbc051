import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

import test from 'ava';

import { connect, LibvirtError } from '../../src/index.js';
import { connectSystem, createThrowawayDomain } from '../helpers/daemon.js';

test('after close(), calls on the connection and its domains reject cleanly', async (t) => {
  const conn = await connect('test:///default');
  const domain = await conn.lookupDomainByName('test');
  let inFlightDone = false;
  const inFlight = domain.getXMLDesc().finally(() => (inFlightDone = true));
  await conn.close();
  t.true(conn.closed);
  // A call queued before close() still completes, and close() waited for it.
  t.true(inFlightDone);
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

test('close() resolves only after the calls in flight have settled', async (t) => {
  const manager = await connectSystem();
  const vm = await createThrowawayDomain(manager, 'close-waits');
  t.teardown(async () => {
    await vm.cleanup();
    await manager.close();
  });
  const pid = Number((await readFile(`/run/libvirt/qemu/${vm.name}.pid`, 'utf8')).trim());
  const conn = await connectSystem();
  const domain = await conn.lookupDomainByName(vm.name);
  const settled: string[] = [];
  let slow: Array<Promise<string>>;
  let closing: Promise<void> | undefined;
  process.kill(pid, 'SIGSTOP');
  try {
    // A frozen QEMU cannot answer its monitor: these calls wait until SIGCONT.
    slow = Array.from({ length: 2 }, (_, i) => domain.qemuMonitorCommand('{"execute":"query-status"}').finally(() => settled.push(`call ${i}`)));
    // Deliberate: lets both calls reach libvirt, which gives no sign of it.
    await sleep(200);
    closing = conn.close().finally(() => settled.push('close'));
    t.true(conn.closed, 'closed from the moment close() is called');
    // Deliberate: time in which close() would have resolved had it not waited.
    await sleep(700);
    t.deepEqual(settled, [], 'close() waits for the frozen calls');
  } finally {
    process.kill(pid, 'SIGCONT');
  }
  const replies = await Promise.all(slow);
  await closing;
  for (const reply of replies) t.true((JSON.parse(reply) as { return: { running: boolean } }).return.running);
  t.deepEqual(settled.slice(-1), ['close'], `settled in order ${settled.join(', ')}`);
  t.is(settled.length, 3);
});

test('close() twice returns the same promise, and closed is true at once even with listeners to remove', async (t) => {
  const conn = await connect('test:///default');
  const domain = await conn.lookupDomainByName('test');
  conn
    .on('lifecycle', () => undefined)
    .on('block-job', () => undefined)
    .on('close', () => undefined);
  await conn.eventsReady();
  const first = conn.close();
  t.true(conn.closed);
  t.is(conn.close(), first);
  // Calls made after close() reject, even before the removal of the registrations ran.
  const error = await t.throwsAsync(domain.getXMLDesc(), { instanceOf: LibvirtError });
  t.is(error?.codeName, 'VIR_ERR_INVALID_CONN');
  await first;
  t.is(conn.close(), first);
  t.true(conn.closed);
});
