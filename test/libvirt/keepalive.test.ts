// libvirtd drops clients that leave its keepalive probes unanswered (about 30 s
// with the default settings); the event loop thread answers them, so an idle
// connection stays usable.
import test from 'ava';

import { connect } from '../../src/index.js';
import { connectSystem } from '../helpers/daemon.js';

test('an idle connection to the daemon survives past the keepalive timeout', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const hostname = await conn.getHostname();
  await new Promise((resolve) => setTimeout(resolve, 40_000));
  t.true(await conn.isAlive());
  t.is(await conn.getHostname(), hostname);
});

test('keepalive can be configured on remote drivers; in-process drivers refuse it', async (t) => {
  const conn = await connect('qemu:///system', { keepAlive: { interval: 2, count: 3 } });
  t.teardown(() => conn.close());
  t.true(await conn.setKeepAlive(5, 5));
  const local = await connect('test:///default');
  t.teardown(() => local.close());
  const unsupported = await t.throwsAsync(local.setKeepAlive(5, 5));
  t.is((unsupported as { codeName?: string }).codeName, 'VIR_ERR_NO_SUPPORT');
});
