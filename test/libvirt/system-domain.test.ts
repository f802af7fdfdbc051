// A real domain on the real daemon: define, start, write through QEMU, check
// the bytes with qemu-io (a tool we did not write), destroy, undefine.
import test from 'ava';

import { DomainState, DomainRunningReason, LibvirtError } from '../../src/index.js';
import { connectSystem, createThrowawayDomain, guestWrite, virtType } from '../helpers/daemon.js';
import { run, tryRun } from '../helpers/process.js';

test('a throwaway domain runs, takes guest writes, and is removed', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const vm = await createThrowawayDomain(conn, 'sysdom', [{ format: 'qcow2', sizeMiB: 16 }]);
  t.teardown(() => vm.cleanup());
  const { domain } = vm;

  const state = await domain.getState();
  t.is(state.state, DomainState.RUNNING);
  t.is(state.reason, DomainRunningReason.BOOTED);
  t.true(await domain.isActive());
  t.true(await domain.isPersistent());
  t.is(typeof (await domain.getId()), 'number');
  const xml = await domain.getXMLDesc();
  t.regex(xml, new RegExp(`<domain type='${await virtType(conn)}' id='\\d+'`));
  t.is((await conn.lookupDomainByUUID(domain.uuid)).name, vm.name);

  await guestWrite(domain, 0, 0xab, '1M', '128k');
  const image = vm.disks[0]!.path;
  // -U: the image is in use by the running QEMU; read it anyway, read-only.
  const read = await run('qemu-io', ['-U', '-r', '-f', 'qcow2', '-c', 'read -P 0xab 1M 128k', image]);
  t.regex(read, /read 131072\/131072 bytes/);
  const mismatch = await tryRun('qemu-io', ['-U', '-r', '-f', 'qcow2', '-c', 'read -P 0xab 2M 64k', image]);
  t.regex(mismatch.stdout + mismatch.stderr, /Pattern verification failed/);

  const qmp = JSON.parse(await domain.qemuMonitorCommand('{"execute":"query-status"}')) as {
    return: { running: boolean };
  };
  t.true(qmp.return.running);

  await domain.destroy();
  t.is((await domain.getState()).state, DomainState.SHUTOFF);
  await domain.undefine();
  const gone = await t.throwsAsync(conn.lookupDomainByName(vm.name), { instanceOf: LibvirtError });
  t.is(gone?.codeName, 'VIR_ERR_NO_DOMAIN');
});

test("daemon errors keep libvirt's code and domain", async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const missing = await t.throwsAsync(conn.lookupDomainByName('lvbt-does-not-exist'), { instanceOf: LibvirtError });
  t.is(missing?.codeName, 'VIR_ERR_NO_DOMAIN');
  t.is(missing?.domainName, 'VIR_FROM_QEMU');
  t.regex(missing?.message ?? '', /lvbt-does-not-exist/);

  const vm = await createThrowawayDomain(conn, 'syserr', [{ sizeMiB: 8 }], { start: false });
  t.teardown(() => vm.cleanup());
  const notRunning = await t.throwsAsync(vm.domain.destroy(), { instanceOf: LibvirtError });
  t.is(notRunning?.codeName, 'VIR_ERR_OPERATION_INVALID');
  const badMonitor = await t.throwsAsync(vm.domain.qemuMonitorCommand('info status', { hmp: true }), {
    instanceOf: LibvirtError,
  });
  t.is(badMonitor?.codeName, 'VIR_ERR_OPERATION_INVALID');
});
