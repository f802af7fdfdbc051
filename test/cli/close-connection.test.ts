// A command's connection is closed once its outcome is decided: the close is bounded,
// and what it does never changes the outcome.
import test from 'ava';

import { CLOSE_WAIT_MS, closeConnection } from '../../src/cli/libvirt-connection.js';
import { connect } from '../../src/index.js';

test('a close that never ends is given up after the bound, so the command still exits', async (t) => {
  const started = Date.now();
  await closeConnection({ close: () => new Promise<void>(() => undefined) }, 200);
  const waited = Date.now() - started;
  t.true(waited >= 190 && waited < 5_000, `waited ${waited} ms`);
  t.is(CLOSE_WAIT_MS, 15_000);
});

test('a close that fails changes nothing, and a real close returns as soon as it is done', async (t) => {
  await t.notThrowsAsync(closeConnection({ close: () => Promise.reject(new Error('the daemon went away')) }, 60_000));
  const conn = await connect('test:///default');
  const started = Date.now();
  await closeConnection(conn, 60_000);
  t.true(Date.now() - started < 30_000, 'not held up by the bound');
  t.true(conn.closed);
  await t.notThrowsAsync(closeConnection(null));
});
