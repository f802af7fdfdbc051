// Checkpoints against the real daemon, checked with virsh.
import test from 'ava';

import {
  BlockJobStatus,
  CheckpointCreateFlags,
  CheckpointDeleteFlags,
  CheckpointListFlags,
  CheckpointXMLFlags,
  LibvirtError,
  ListDomainsFlags,
} from '../../src/index.js';
import { parseCheckpointXml, type CheckpointSpec } from '../../src/xml/index.js';
import { connectSystem, createThrowawayDomain, guestWrite } from '../helpers/daemon.js';
import { recordEvents } from '../helpers/events.js';
import { run, tryRun } from '../helpers/process.js';

const twoDisks = [{ sizeMiB: 16 }, { sizeMiB: 16 }];
const vdaOnly = (name: string): CheckpointSpec => ({
  name,
  disks: [
    { name: 'vda', checkpoint: 'bitmap' },
    { name: 'vdb', checkpoint: 'no' },
  ],
});

test('a checkpoint tracks the bytes written to vda and ignores the excluded vdb', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const vm = await createThrowawayDomain(conn, 'cpsize', twoDisks);
  t.teardown(() => vm.cleanup());

  const checkpoint = await vm.domain.createCheckpoint(vdaOnly('size-check'));
  t.is(checkpoint.name, 'size-check');
  t.is(checkpoint.domain, vm.domain);
  await guestWrite(vm.domain, 0, 0xab, '1M', '128k');
  await guestWrite(vm.domain, 0, 0xcd, '8M', '64k');
  await guestWrite(vm.domain, 1, 0xef, '1M', '64k');

  const xml = await checkpoint.getXMLDesc(CheckpointXMLFlags.SIZE);
  t.regex(xml, /<disk name='vda' checkpoint='bitmap' bitmap='size-check' size='196608'\/>/);
  const spec = parseCheckpointXml(xml);
  const vda = spec.disks?.find((d) => d.name === 'vda');
  const vdb = spec.disks?.find((d) => d.name === 'vdb');
  t.deepEqual(vda, { name: 'vda', checkpoint: 'bitmap', bitmap: 'size-check', size: 196608 });
  t.is(vdb?.checkpoint, 'no');
  // virsh agrees.
  t.regex(await run('virsh', ['-c', 'qemu:///system', 'checkpoint-dumpxml', vm.name, 'size-check', '--size']), /size='196608'/);

  const noDomain = await checkpoint.getXMLDesc(CheckpointXMLFlags.NO_DOMAIN);
  t.notRegex(noDomain, /<domain[ >]/);
  t.regex(await checkpoint.getXMLDesc(), /<domain[ >]/);

  const withCheckpoint = await conn.listAllDomains(ListDomainsFlags.HAS_CHECKPOINT);
  t.true(withCheckpoint.some((d) => d.name === vm.name));
  const without = await conn.listAllDomains(ListDomainsFlags.NO_CHECKPOINT);
  t.false(without.some((d) => d.name === vm.name));
});

test('a chain of three checkpoints: parent, children and topological order agree with virsh', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const vm = await createThrowawayDomain(conn, 'cpchain', twoDisks);
  t.teardown(() => vm.cleanup());

  const first = await vm.domain.createCheckpoint(vdaOnly('first'));
  await guestWrite(vm.domain, 0, 0x01, 0, '64k');
  const second = await vm.domain.createCheckpoint(vdaOnly('second'));
  await guestWrite(vm.domain, 0, 0x02, '1M', '64k');
  const third = await vm.domain.createCheckpoint(vdaOnly('third'));

  t.is(await first.getParent(), null);
  t.is((await second.getParent())?.name, 'first');
  t.is((await third.getParent())?.name, 'second');
  t.deepEqual(
    (await first.listAllChildren()).map((c) => c.name),
    ['second'],
  );
  t.deepEqual(
    (await first.listAllChildren(CheckpointListFlags.DESCENDANTS | CheckpointListFlags.TOPOLOGICAL)).map((c) => c.name),
    ['second', 'third'],
  );
  t.deepEqual(
    (await third.listAllChildren()).map((c) => c.name),
    [],
  );
  const topological = (await vm.domain.listAllCheckpoints(CheckpointListFlags.TOPOLOGICAL)).map((c) => c.name);
  t.deepEqual(topological, ['first', 'second', 'third']);
  t.deepEqual(
    (await vm.domain.listAllCheckpoints(CheckpointListFlags.ROOTS)).map((c) => c.name),
    ['first'],
  );
  t.deepEqual(
    (await vm.domain.listAllCheckpoints(CheckpointListFlags.LEAVES)).map((c) => c.name),
    ['third'],
  );
  t.deepEqual((await vm.domain.listAllCheckpoints(CheckpointListFlags.NO_LEAVES)).map((c) => c.name).sort(), ['first', 'second']);

  // virsh's own view of each parent (it answers with an error for a root).
  for (const [child, parent] of [
    ['second', 'first'],
    ['third', 'second'],
  ] as const) {
    t.is((await run('virsh', ['-c', 'qemu:///system', 'checkpoint-parent', vm.name, child])).trim(), parent);
  }
  const rootParent = await tryRun('virsh', ['-c', 'qemu:///system', 'checkpoint-parent', vm.name, 'first']);
  t.not(rootParent.code, 0);
  const tree = await run('virsh', ['-c', 'qemu:///system', 'checkpoint-list', vm.name, '--tree']);
  const treeNames = tree
    .split('\n')
    .map((line) => line.replace(/[|+\- ]/g, ''))
    .filter(Boolean);
  t.deepEqual(treeNames, topological);

  // Deleting the middle one re-parents the last onto the first.
  await second.delete();
  t.is((await (await vm.domain.lookupCheckpointByName('third')).getParent())?.name, 'first');
  await first.delete(CheckpointDeleteFlags.CHILDREN);
  t.deepEqual(await vm.domain.listAllCheckpoints(), []);
});

test('metadata deleted and redefined from saved XML still serves incremental backups', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const vm = await createThrowawayDomain(conn, 'cpredef', twoDisks);
  t.teardown(() => vm.cleanup());

  const checkpoint = await vm.domain.createCheckpoint(vdaOnly('saved'));
  const savedXml = await checkpoint.getXMLDesc();
  await guestWrite(vm.domain, 0, 0x77, '2M', '64k');
  await checkpoint.delete(CheckpointDeleteFlags.METADATA_ONLY);
  const gone = await t.throwsAsync(vm.domain.lookupCheckpointByName('saved'), { instanceOf: LibvirtError });
  t.is(gone?.codeName, 'VIR_ERR_NO_DOMAIN_CHECKPOINT');

  const redefined = await vm.domain.createCheckpoint(savedXml, CheckpointCreateFlags.REDEFINE | CheckpointCreateFlags.REDEFINE_VALIDATE);
  t.is(redefined.name, 'saved');
  t.is(parseCheckpointXml(await redefined.getXMLDesc(CheckpointXMLFlags.SIZE)).disks?.find((d) => d.name === 'vda')?.checkpoint, 'bitmap');

  const target = `${vm.disks[0]!.path}.inc.qcow2`;
  t.teardown(() => run('rm', ['-f', target]));
  const events = recordEvents(conn, vm.domain);
  t.teardown(events.stop);
  await conn.eventsReady();
  await vm.domain.backupBegin({
    mode: 'push',
    incremental: 'saved',
    disks: [
      { name: 'vda', backup: 'yes', type: 'file', target: { file: target }, driver: { type: 'qcow2' } },
      { name: 'vdb', backup: 'no' },
    ],
  });
  const stats = await vm.domain.waitForJob({ timeoutMs: 60_000 });
  t.true(stats.success);
  t.is(await events.blockJobsEnded('vda', BlockJobStatus.COMPLETED, 1), 1);
  const map = JSON.parse(await run('qemu-img', ['map', '-U', '--output=json', target])) as Array<{
    start: number;
    length: number;
    data: boolean;
    depth: number;
  }>;
  const own = map.filter((e) => e.depth === 0 && e.data);
  t.deepEqual(
    own.map((e) => [e.start, e.length]),
    [[2 * 2 ** 20, 65536]],
  );
});

test('a typed spec is checked for what it is for: a redefinition with REDEFINE, a new checkpoint otherwise', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const vm = await createThrowawayDomain(conn, 'cptyped', twoDisks);
  t.teardown(() => vm.cleanup());
  const checkpoint = await vm.domain.createCheckpoint(vdaOnly('typed'));
  const saved = parseCheckpointXml(await checkpoint.getXMLDesc());
  t.is(typeof saved.creationTime, 'number');
  await checkpoint.delete(CheckpointDeleteFlags.METADATA_ONLY);
  const redefine = CheckpointCreateFlags.REDEFINE | CheckpointCreateFlags.REDEFINE_VALIDATE;

  // Refused before anything is sent to libvirt, each with the rule of its call.
  const { creationTime, ...withoutTime } = saved;
  await t.throwsAsync(vm.domain.createCheckpoint(withoutTime, redefine), { message: /^creationTime: required with REDEFINE/ });
  await t.throwsAsync(vm.domain.createCheckpoint(saved), { message: /^creationTime: set by libvirt when it creates the checkpoint/ });
  const target = `${vm.disks[0]!.path}.typed.qcow2`;
  t.teardown(() => run('rm', ['-f', target]));
  const push = {
    mode: 'push' as const,
    disks: [
      { name: 'vda', backup: 'yes' as const, type: 'file' as const, target: { file: target } },
      { name: 'vdb', backup: 'no' as const },
    ],
  };
  await t.throwsAsync(vm.domain.backupBegin(push, { ...saved, name: 'with-backup' }), { message: /^creationTime: set by libvirt/ });
  t.deepEqual(await vm.domain.listAllCheckpoints(), []);

  const redefined = await vm.domain.createCheckpoint(saved, redefine);
  t.is(redefined.name, 'typed');
  t.is(parseCheckpointXml(await redefined.getXMLDesc()).creationTime, creationTime);
  t.regex(await run('virsh', ['-c', 'qemu:///system', 'checkpoint-list', vm.name, '--name']), /^typed$/m);
});

test('redefining with REDEFINE_VALIDATE refuses a checkpoint whose bitmap is gone', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const vm = await createThrowawayDomain(conn, 'cpvalid', twoDisks);
  t.teardown(() => vm.cleanup());
  const checkpoint = await vm.domain.createCheckpoint(vdaOnly('lost'));
  const savedXml = await checkpoint.getXMLDesc();
  await checkpoint.delete();
  const error = await t.throwsAsync(vm.domain.createCheckpoint(savedXml, CheckpointCreateFlags.REDEFINE | CheckpointCreateFlags.REDEFINE_VALIDATE), {
    instanceOf: LibvirtError,
  });
  t.is(error?.codeName, 'VIR_ERR_CHECKPOINT_INCONSISTENT');
});
