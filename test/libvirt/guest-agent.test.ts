// Domain.fsFreeze(), fsThaw() and getFSInfo() against a real guest agent (the test
// guest), checked with the agent's own guest-fsfreeze-status, and against a domain with
// no agent channel, which libvirt refuses.
import test from 'ava';

import { LibvirtError } from '../../src/index.js';
import { connectSystem, createThrowawayDomain } from '../helpers/daemon.js';
import { startRealGuest } from '../helpers/real-guest.js';

test('fsFreeze freezes the guest file systems until fsThaw; a mount point list limits the freeze; getFSInfo lists them', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const guest = await startRealGuest(t, conn, 'ga-freeze');

  const fileSystems = await guest.domain.getFSInfo();
  const root = fileSystems.find((fs) => fs.mountpoint === '/');
  t.like(root, { fstype: 'ext4' });
  t.true(root!.devAliases.includes('vda'), `devAliases of /: ${JSON.stringify(root!.devAliases)}`);

  t.is(await guest.domain.fsFreeze(), fileSystems.length);
  t.is(await guest.agent('guest-fsfreeze-status'), 'frozen');
  t.is(await guest.domain.fsThaw(), fileSystems.length);
  t.is(await guest.agent('guest-fsfreeze-status'), 'thawed');
  t.is(await guest.domain.fsThaw(), 0, 'a guest that is not frozen has nothing to thaw');

  t.is(await guest.domain.fsFreeze(['/']), 1);
  t.is(await guest.agent('guest-fsfreeze-status'), 'frozen');
  // QEMU's agent thaws everything at once: libvirt takes no list for it.
  await t.throwsAsync(guest.domain.fsThaw(['/']), { instanceOf: LibvirtError, message: /mountpoints/ });
  t.is(await guest.domain.fsThaw(), 1);
  t.is(await guest.agent('guest-fsfreeze-status'), 'thawed');

  // The agent passes over what is not a mount point: only the count tells.
  t.is(await guest.domain.fsFreeze(['/no/such/mount']), 0);
  t.is(await guest.agent('guest-fsfreeze-status'), 'thawed');
});

test('fsFreeze, fsThaw and getFSInfo of a domain without an agent channel reject with a LibvirtError; bad mount point lists with a TypeError', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const plain = await createThrowawayDomain(conn, 'ga-none');
  t.teardown(() => plain.cleanup());

  for (const call of [() => plain.domain.fsFreeze(), () => plain.domain.fsThaw(), () => plain.domain.getFSInfo()]) {
    const error = await t.throwsAsync(call(), { instanceOf: LibvirtError });
    t.regex(error.message, /agent/i);
    t.log(`${error.operation}: ${error.codeName}: ${error.message}`);
  }
  await t.throwsAsync(plain.domain.fsFreeze([5 as unknown as string]), { instanceOf: TypeError, message: /"mountpoints"/ });
  await t.throwsAsync(plain.domain.fsThaw(['/a\0b']), { instanceOf: TypeError, message: /"mountpoints"/ });
});
