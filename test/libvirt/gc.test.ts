// Handles dropped in bulk and collected at any moment: no crash, bounded memory.
// Runs under --expose-gc (see the ava config).
import test from 'ava';

import { connect, type Domain } from '../../src/index.js';

const gc = (globalThis as { gc?: () => void }).gc;
const underAddressSanitizer = (process.env.LD_PRELOAD ?? '').includes('libasan');

async function collect(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    gc!();
    // Native finalizers run from the loop after a collection.
    await new Promise((resolve) => setImmediate(resolve));
  }
}

test('20 000 domain handles created and dropped: no crash, no unbounded RSS growth', async (t) => {
  t.truthy(gc, 'tests must run with --expose-gc');
  const conn = await connect('test:///default');
  t.teardown(() => conn.close());
  const rounds = 20;
  const perRound = 1000;
  const rss: number[] = [];
  for (let round = 0; round < rounds; round++) {
    let batch: Domain[] = await Promise.all(Array.from({ length: perRound }, () => conn.lookupDomainByName('test')));
    t.is(batch.length, perRound);
    t.is(batch[perRound - 1]!.name, 'test');
    // eslint-disable-next-line no-useless-assignment -- drops this round's references so that the collection can free them
    batch = [];
    await collect();
    rss.push(process.memoryUsage().rss);
  }
  const warm = rss[4]!;
  const end = rss[rounds - 1]!;
  t.log(`RSS after round 5: ${(warm / 2 ** 20).toFixed(1)} MiB, after round ${rounds}: ${(end / 2 ** 20).toFixed(1)} MiB`);
  // A leak of even one small allocation per handle would add well over this.
  // Under AddressSanitizer (npm run test:asan) freed memory sits in its
  // quarantine, so RSS says nothing there; the sanitizer watches the memory itself.
  if (!underAddressSanitizer) t.true(end - warm < 24 * 2 ** 20, `RSS grew by ${((end - warm) / 2 ** 20).toFixed(1)} MiB`);
});

test('connections dropped without close() are finalized without crashing', async (t) => {
  for (let round = 0; round < 5; round++) {
    const conns = await Promise.all(Array.from({ length: 40 }, () => connect('test:///default')));
    // Keep some domains alive past their connection's last JS reference.
    const survivors = await Promise.all(conns.slice(0, 5).map((c) => c.lookupDomainByName('test')));
    await collect();
    for (const domain of survivors) t.regex(await domain.getXMLDesc(), /<name>test<\/name>/);
  }
  await collect();
  t.pass('no crash through finalization');
});

test('GC during in-flight calls does not free what the calls use', async (t) => {
  const pending: Array<Promise<string>> = [];
  for (let i = 0; i < 50; i++) {
    const conn = await connect('test:///default');
    const domain = await conn.lookupDomainByName('test');
    pending.push(domain.getXMLDesc());
  }
  await collect();
  const xmls = await Promise.all(pending);
  t.is(xmls.length, 50);
  for (const xml of xmls) t.regex(xml, /<domain/);
});
