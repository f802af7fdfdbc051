// 64 daemon calls in flight must not stall the JS event loop.
import { performance } from 'node:perf_hooks';

import test from 'ava';

import { connectSystem, createThrowawayDomain } from '../helpers/daemon.js';

test('the event loop keeps ticking while 64 daemon calls are in flight', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const vm = await createThrowawayDomain(conn, 'lag', [{ sizeMiB: 8 }]);
  t.teardown(() => vm.cleanup());

  const intervalMs = 5;
  let last = performance.now();
  let worstLag = 0;
  let ticks = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    worstLag = Math.max(worstLag, now - last - intervalMs);
    last = now;
    ticks++;
  }, intervalMs);

  const started = performance.now();
  const results = await Promise.all(Array.from({ length: 64 }, (_, i) => (i % 2 === 0 ? vm.domain.getXMLDesc() : conn.getCapabilities())));
  const elapsed = performance.now() - started;
  // Let the timer fire once more after the last resolution.
  await new Promise((resolve) => setTimeout(resolve, intervalMs * 3));
  clearInterval(timer);

  t.is(results.length, 64);
  results.forEach((xml, i) => t.regex(xml, i % 2 === 0 ? /<domain type=/ : /<capabilities>/));
  t.log(`64 calls in ${elapsed.toFixed(1)} ms, ${ticks} ticks, worst timer lag ${worstLag.toFixed(1)} ms`);
  // Generous bound: a blocked loop would lag by the whole batch's duration.
  t.true(worstLag < 250, `timer lagged ${worstLag.toFixed(1)} ms`);
  t.true(ticks > 0);
});
