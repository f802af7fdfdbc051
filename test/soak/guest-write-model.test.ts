// The soak keeps raw references in step with running qcow2 disks by modelling what
// each guest write does. The model's one assumption about QEMU 7.2 is checked here,
// against QEMU itself: a discard deallocates whole clusters only, which then read as
// zeroes (no backing file), and only when the disk is opened with discard=unmap.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import test from 'ava';

import { discardedRange, referenceCommands, type GuestWrite } from '../../scripts/soak/guest-writes.js';
import { compareImages } from '../../scripts/soak/image-compare.js';
import { LibvirtLink } from '../../scripts/soak/libvirt-link.js';
import { MirroredDomain } from '../../scripts/soak/mirrored-domain.js';
import { createWriteSources } from '../../scripts/soak/write-sources.js';
import { connectSystem, createThrowawayDomain, guestWrite } from '../helpers/daemon.js';
import { run } from '../helpers/process.js';

const KiB = 1024;
const CLUSTER = 64 * KiB;

test('discardedRange keeps whole clusters only', (t) => {
  t.deepEqual(discardedRange(100 * KiB, 800 * KiB, CLUSTER), { offset: 128 * KiB, length: 768 * KiB });
  t.deepEqual(discardedRange(0, 128 * KiB, CLUSTER), { offset: 0, length: 128 * KiB });
  t.is(discardedRange(4 * KiB, 100 * KiB, CLUSTER), null, 'no whole cluster inside');
  t.deepEqual(referenceCommands({ kind: 'discard', disk: 0, offset: 4 * KiB, length: 60 * KiB }, [], { sizeBytes: 1 << 20, clusterBytes: CLUSTER }), []);
});

async function expectedImage(dir: string, name: string, sizeMiB: number, commands: string[]): Promise<string> {
  const path = join(dir, name);
  await run('qemu-img', ['create', '-q', '-f', 'raw', path, `${sizeMiB}M`]);
  await run('qemu-io', ['-f', 'raw', ...commands.flatMap((command) => ['-c', command]), path]);
  return path;
}

test('with discard=unmap, an unaligned discard zeroes the clusters it covers whole and keeps the partial ones', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'lvb-model-'));
  const link = new LibvirtLink();
  const sources = await createWriteSources(dir, 7, 1);
  const domain = await MirroredDomain.create(link, { label: 'model', sizesMiB: [16], virtualization: 'auto', referenceDir: dir, sources });
  t.teardown(async () => {
    await domain.cleanup();
    await link.drop();
    await rm(dir, { recursive: true, force: true });
  });
  await domain.apply([
    { kind: 'pattern', disk: 0, offset: 0, length: 1024 * KiB, pattern: 0xab },
    { kind: 'discard', disk: 0, offset: 100 * KiB, length: 800 * KiB },
  ]);
  // The truth written out by hand, not by the model: data up to 128K, zeroes to 896K, data to 1M.
  const expected = await expectedImage(dir, 'expected.raw', 16, ['write -P 0xab 0 1M', 'write -z 128k 768k']);
  const live = await compareImages({ path: domain.disks[0]!.image, format: 'qcow2' }, { path: expected, format: 'raw' }, { shared: true });
  t.true(live.identical, live.detail);
  t.deepEqual(await domain.modelMismatches(), []);
});

test('every kind of write the soak issues leaves the running disk equal to its reference', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'lvb-model-'));
  const link = new LibvirtLink();
  const sources = await createWriteSources(dir, 11, 2);
  const domain = await MirroredDomain.create(link, { label: 'model', sizesMiB: [8, 4], virtualization: 'auto', referenceDir: dir, sources });
  t.teardown(async () => {
    await domain.cleanup();
    await link.drop();
    await rm(dir, { recursive: true, force: true });
  });
  const M = 1024 * KiB;
  const writes: GuestWrite[] = [
    { kind: 'data', disk: 0, offset: 512, length: 3 * M, source: 0 },
    { kind: 'data', disk: 1, offset: 0, length: 4 * M, source: 1 },
    { kind: 'pattern', disk: 0, offset: 5 * M + 4096, length: 70 * KiB, pattern: 0 },
    { kind: 'zero', disk: 0, offset: 1 * M + 512, length: 200 * KiB, unmap: false },
    { kind: 'zero', disk: 1, offset: 64 * KiB, length: 1 * M + 3584, unmap: true },
    { kind: 'discard', disk: 0, offset: 2 * M - 7 * 512, length: 500 * KiB },
    { kind: 'discard', disk: 1, offset: 3 * M, length: 1 * M },
    { kind: 'discard', disk: 0, offset: 6 * M + 512, length: 4096 },
    { kind: 'pattern', disk: 1, offset: 4 * M - 4096, length: 4096, pattern: 0x5a },
  ];
  await domain.apply(writes);
  t.deepEqual(await domain.modelMismatches(), []);
});

test("without discard=unmap (libvirt's default) QEMU ignores a discard: why the soak's disks set it", async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const vm = await createThrowawayDomain(conn, 'model-nounmap', [{ sizeMiB: 4 }]);
  t.teardown(() => vm.cleanup());
  const dir = await mkdtemp(join(tmpdir(), 'lvb-model-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await guestWrite(vm.domain, 0, 0xcd, 0, '1M');
  const device = '/machine/peripheral/virtio-disk0/virtio-backend';
  await vm.domain.qemuMonitorCommand(`qemu-io -d ${device} "discard 0 1M"`, { hmp: true });
  await vm.domain.qemuMonitorCommand(`qemu-io -d ${device} "flush"`, { hmp: true });
  const expected = await expectedImage(dir, 'expected.raw', 4, ['write -P 0xcd 0 1M']);
  const live = await compareImages({ path: vm.disks[0]!.path, format: 'qcow2' }, { path: expected, format: 'raw' }, { shared: true });
  t.true(live.identical, live.detail);
});
