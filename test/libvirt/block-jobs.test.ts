// Block copy and block jobs against the real daemon: a disk copied while the guest
// writes, the READY event, pivot and plain abort; results checked with qemu-img and virsh.
import { rm } from 'node:fs/promises';
import { join } from 'node:path';

import test from 'ava';

import { BlockJobAbortFlags, BlockJobError, BlockJobInfoFlags, BlockJobSetSpeedFlags, BlockJobStatus, BlockJobType, LibvirtError } from '../../src/index.js';
import { parseDomainXml, XmlValidationError } from '../../src/xml/index.js';
import { waitForBlockJobReady, type BlockJobInfo } from '../../src/libvirt/block-jobs.js';
import { connectSystem, createThrowawayDomain, guestWrite, IMAGE_DIR } from '../helpers/daemon.js';
import { run } from '../helpers/process.js';

const MiB = 1024 * 1024;

async function sourceOf(name: string, target: string, inactive = false): Promise<string> {
  const out = await run('virsh', ['-c', 'qemu:///system', 'domblklist', name, ...(inactive ? ['--inactive'] : [])]);
  const line = out.split('\n').find((row) => row.trim().startsWith(`${target} `));
  return line?.trim().split(/\s+/)[1] ?? '';
}

test('blockCopy to a file, READY event, guest writes during the copy, pivot: the disk now lives in the copy', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const vm = await createThrowawayDomain(conn, 'blockcopy', [{ sizeMiB: 32 }]);
  const copy = join(IMAGE_DIR, `${vm.name}-copy.qcow2`);
  t.teardown(async () => {
    await vm.cleanup();
    await rm(copy, { force: true });
  });
  await guestWrite(vm.domain, 0, 0x11, 0, '4M');
  t.is(await vm.domain.getBlockJobInfo('vda'), null, 'no job yet');

  const events: Array<{ disk: string; type: BlockJobType; status: BlockJobStatus }> = [];
  const listener = (domain: { uuid: string }, payload: { disk: string; type: BlockJobType; status: BlockJobStatus }) => {
    if (domain.uuid === vm.domain.uuid) events.push(payload);
  };
  conn.on('block-job', listener);
  t.teardown(() => conn.off('block-job', listener));
  await conn.eventsReady('block-job');

  // Slow enough that the job is seen running, and that its speed can be changed.
  await vm.domain.blockCopy('vda', { type: 'file', path: copy, format: 'qcow2' }, { bandwidth: 4 * MiB, transientJob: true });
  const running = await vm.domain.getBlockJobInfo('vda', BlockJobInfoFlags.BANDWIDTH_BYTES);
  t.truthy(running);
  t.is(running!.type, BlockJobType.COPY);
  t.is(running!.bandwidth, 4 * MiB);
  await vm.domain.blockJobSetSpeed('vda', 64 * MiB, BlockJobSetSpeedFlags.BANDWIDTH_BYTES);
  t.is((await vm.domain.getBlockJobInfo('vda', BlockJobInfoFlags.BANDWIDTH_BYTES))?.bandwidth, 64 * MiB);
  await vm.domain.blockJobSetSpeed('vda', 0);

  await guestWrite(vm.domain, 0, 0x22, '8M', '1M');
  await vm.domain.waitForBlockJobReady('vda', { timeoutMs: 60_000 });
  const ready = await vm.domain.getBlockJobInfo('vda');
  t.truthy(ready);
  t.is(ready!.cur, ready!.end, 'a ready copy reports cur == end');
  t.deepEqual(
    parseDomainXml(await vm.domain.getXMLDesc()).disks.find((d) => d.target?.dev === 'vda')?.mirror,
    { job: 'copy', ready: 'yes' },
    "libvirt's live XML holds the copy ready",
  );
  // A write after READY is mirrored too.
  await guestWrite(vm.domain, 0, 0x33, '16M', '1M');

  await vm.domain.blockJobAbort('vda', BlockJobAbortFlags.PIVOT);
  t.is(await sourceOf(vm.name, 'vda'), copy, 'the running domain now uses the copy');
  t.is(await sourceOf(vm.name, 'vda', true), copy, "the pivot rewrites the domain's persistent definition too");
  t.is(await vm.domain.getBlockJobInfo('vda'), null);
  t.true(
    events.some((e) => e.disk === 'vda' && e.type === BlockJobType.COPY && e.status === BlockJobStatus.READY),
    JSON.stringify(events),
  );

  await vm.domain.destroy();
  for (const [pattern, offset] of [
    [0x11, 0],
    [0x22, 8 * MiB],
    [0x33, 16 * MiB],
  ] as const) {
    const output = await run('qemu-io', ['-r', '-f', 'qcow2', '-c', `read -P ${pattern} ${offset} 1M`, copy]);
    // qemu-io reports a pattern mismatch in its output, not always in its exit status.
    t.notRegex(output, /Pattern verification failed/, `the copy holds 0x${pattern.toString(16)} at ${offset}`);
    t.regex(output, /read 1048576\/1048576 bytes/);
  }
});

test('blockJobAbort without PIVOT drops the copy and keeps the original; a shallow copy keeps the backing chain', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const vm = await createThrowawayDomain(conn, 'blockcopy-abort', [{ sizeMiB: 16 }], { start: false });
  const original = vm.disks[0]!.path;
  const base = join(IMAGE_DIR, `${vm.name}-base.qcow2`);
  const copy = join(IMAGE_DIR, `${vm.name}-copy.qcow2`);
  t.teardown(async () => {
    await vm.cleanup();
    await rm(copy, { force: true });
    await rm(base, { force: true });
  });
  // The disk becomes an overlay of a base holding data of its own.
  await run('mv', [original, base]);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x44 0 1M', base]);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', base, original]);
  await vm.domain.start();

  await vm.domain.blockCopy('vda', { type: 'file', path: copy, format: 'qcow2' }, { shallow: true, transientJob: true });
  await vm.domain.waitForBlockJobReady('vda', { timeoutMs: 60_000 });
  await vm.domain.blockJobAbort('vda');
  t.is(await sourceOf(vm.name, 'vda'), original, 'without PIVOT the disk stays where it was');
  t.is(await vm.domain.getBlockJobInfo('vda'), null);

  // A reused shallow destination: the caller made it with the same backing file.
  await rm(copy, { force: true });
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', base, copy]);
  await vm.domain.blockCopy('vda', { type: 'file', path: copy, format: 'qcow2' }, { shallow: true, reuseExternal: true, transientJob: true });
  await vm.domain.waitForBlockJobReady('vda', { timeoutMs: 60_000 });
  await vm.domain.blockJobAbort('vda', BlockJobAbortFlags.PIVOT);
  t.is(await sourceOf(vm.name, 'vda'), copy);
  const chain = JSON.parse(await run('qemu-img', ['info', '-U', '--backing-chain', '--output=json', copy])) as Array<{ filename: string }>;
  t.deepEqual(
    chain.map((image) => image.filename),
    [copy, base],
  );
});

test('block job errors: libvirt refusals are LibvirtErrors, bad arguments are refused before libvirt', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const vm = await createThrowawayDomain(conn, 'blockjob-errors', [{ sizeMiB: 16 }]);
  t.teardown(() => vm.cleanup());
  const noDisk = await t.throwsAsync(vm.domain.getBlockJobInfo('vdz'));
  t.true(noDisk instanceof LibvirtError, String(noDisk));
  t.regex(noDisk!.message, /vdz/);
  const noJob = await t.throwsAsync(vm.domain.blockJobAbort('vda'));
  t.true(noJob instanceof LibvirtError);
  t.regex(noJob!.message, /no .*job|block job/i);
  const persistent = await t.throwsAsync(vm.domain.blockCopy('vda', { type: 'file', path: join(IMAGE_DIR, `${vm.name}-never.qcow2`) }));
  t.regex(persistent!.message, /not transient/, 'a persistent domain needs transientJob on libvirt 9.0');
  const gone = await t.throwsAsync(vm.domain.waitForBlockJobReady('vda', { timeoutMs: 10_000 }));
  t.true(gone instanceof BlockJobError, String(gone));
  t.is((gone as BlockJobError).disk, 'vda');

  await t.throwsAsync(vm.domain.blockCopy('vda', { type: 'file', path: 'relative.qcow2' }), {
    instanceOf: XmlValidationError,
    message: /^path: must be an absolute path/,
  });
  await t.throwsAsync(vm.domain.blockCopy('vda', { type: 'file', path: '/tmp/x.qcow2' }, { granularity: 1000 }), {
    instanceOf: TypeError,
    message: /options.granularity must be a power of two/,
  });
  await t.throwsAsync(vm.domain.blockCopy('vda', { type: 'file', path: '/tmp/x.qcow2' }, { bandwidth: -1 }), {
    instanceOf: TypeError,
    message: /options.bandwidth must be a whole number of bytes/,
  });
  await t.throwsAsync(vm.domain.blockJobSetSpeed('vda', -5), { instanceOf: TypeError, message: /bandwidth/ });
});

test('a check that finds cur == end waits until libvirt holds the job ready too, as a pivot requires', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  // QEMU's ready flag (cur == end) comes before libvirt has handled QEMU's ready event.
  const info: BlockJobInfo = { type: BlockJobType.COPY, bandwidth: 0, cur: 1 << 20, end: 1 << 20 };
  let libvirtAsked = 0;
  const waited = await waitForBlockJobReady(
    {
      domainName: 'not-a-domain',
      domainUuid: '00000000-0000-0000-0000-000000000000',
      events: conn,
      info: async () => info,
      libvirtHoldsReady: async () => ++libvirtAsked >= 3,
    },
    'vda',
    { recheckMs: 20, timeoutMs: 10_000 },
  );
  t.deepEqual(waited, info);
  t.is(libvirtAsked, 3, 'not before libvirt agreed');
});
