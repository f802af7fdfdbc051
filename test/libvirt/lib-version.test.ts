// The daemon's libvirt version is asked once per connection (typed specs are
// built for it); a failed query must not be kept, or one transient failure
// would break every later typed-spec call on the connection.
import test from 'ava';

import { Connection, LibvirtError } from '../../src/index.js';
import { openNativeWith } from '../helpers/native-wrapper.js';

test('a failed version query is not cached: the next typed-spec checkpoint works', async (t) => {
  const native = await openNativeWith('test:///default', {});
  const ask = native.getLibVersion;
  let asked = 0;
  native.getLibVersion = () => {
    asked++;
    if (asked === 1) {
      return Promise.reject(
        new LibvirtError({
          code: 38,
          domain: 7,
          level: 2,
          message: 'Cannot recv data: Connection reset by peer',
          str1: null,
          str2: null,
          str3: null,
          int1: 0,
          int2: 0,
        }),
      );
    }
    return ask();
  };
  const conn = new Connection(native);
  t.teardown(() => conn.close());
  const domain = await conn.lookupDomainByName('test');
  const prefix = `lv${process.pid}`;
  await t.throwsAsync(domain.createCheckpoint({ name: `${prefix}a` }), { message: /Connection reset by peer/ });
  const checkpoint = await domain.createCheckpoint({ name: `${prefix}a` });
  t.teardown(() => checkpoint.delete());
  t.is(checkpoint.name, `${prefix}a`);
  // A version that was answered is kept.
  const second = await domain.createCheckpoint({ name: `${prefix}b` });
  t.teardown(() => second.delete());
  t.is(asked, 2);
  t.true((await conn.getLibVersion()) >= 6_000_000);
  t.is(asked, 2);
});

test('libVersion() is a deprecated alias of getLibVersion()', async (t) => {
  const native = await openNativeWith('test:///default', {});
  const conn = new Connection(native);
  t.teardown(() => conn.close());
  t.is(await conn.libVersion(), await conn.getLibVersion());
  t.is(conn.libVersion(), conn.getLibVersion(), 'the same cached answer');
});
