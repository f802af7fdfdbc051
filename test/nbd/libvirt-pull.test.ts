// Our NBD client against the export of a real libvirt pull-mode incremental backup:
// the dirty bitmap, the bytes behind it and the whole disk are checked against what
// the guest wrote (through qemu-io) and against nbdinfo and nbdcopy.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import test from 'ava';

import { BASE_ALLOCATION, DirtyBitmapFlags, NbdClient, type Extent } from '../../src/nbd/index.js';
import type { CheckpointSpec } from '../../src/xml/index.js';
import { connectSystem, createThrowawayDomain, guestWrite, IMAGE_DIR } from '../helpers/daemon.js';
import { nbdinfoMap, run, unixUri } from './helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const DIRTY_CONTEXT = 'qemu:dirty-bitmap:backup-vda';

interface Write {
  pattern: number;
  offset: number;
  length: number;
}

// Dirty bitmaps track whole clusters (64 KiB for qcow2), so writes are cluster-aligned
// to make the expected ranges exact. The first two touch and must merge into one run.
const beforeCheckpoint: Write[] = [{ pattern: 0x11, offset: 0, length: 256 * KiB }];
const afterCheckpoint: Write[] = [
  { pattern: 0xa1, offset: 1 * MiB, length: 128 * KiB },
  { pattern: 0xa2, offset: 1 * MiB + 128 * KiB, length: 64 * KiB },
  { pattern: 0xa3, offset: 5 * MiB, length: 64 * KiB },
  { pattern: 0xa4, offset: 12 * MiB, length: 256 * KiB },
  // Overwrites part of the pre-checkpoint data: dirty again, with the new bytes.
  { pattern: 0xa5, offset: 128 * KiB, length: 64 * KiB },
];
const expectedDirty = [
  { offset: 128 * KiB, length: 64 * KiB },
  { offset: 1 * MiB, length: 192 * KiB },
  { offset: 5 * MiB, length: 64 * KiB },
  { offset: 12 * MiB, length: 256 * KiB },
];

const checkpointSpec = (name: string): CheckpointSpec => ({
  name,
  disks: [
    { name: 'vda', checkpoint: 'bitmap' },
    { name: 'vdb', checkpoint: 'no' },
  ],
});

/** The pattern byte the backup must show at `offset`: the last write covering it, else 0. */
function expectedByte(offset: number): number {
  let byte = 0;
  for (const write of [...beforeCheckpoint, ...afterCheckpoint]) {
    if (offset >= write.offset && offset < write.offset + write.length) byte = write.pattern;
  }
  return byte;
}

async function collect(iterable: AsyncIterable<Extent>): Promise<Extent[]> {
  const out: Extent[] = [];
  for await (const extent of iterable) out.push(extent);
  return out;
}

test('a libvirt pull-mode incremental export: dirty extents, their bytes and the full disk', async (t) => {
  const conn = await connectSystem();
  const vm = await createThrowawayDomain(conn, 'nbdpull', [{ sizeMiB: 16 }, { sizeMiB: 16 }]);
  const dir = await mkdtemp(join(tmpdir(), 'lvb-nbd-pull-'));
  const socket = join(dir, 'nbd.sock');
  const scratch = join(IMAGE_DIR, `${vm.name}-scratch.qcow2`);
  let client: NbdClient | undefined;
  t.teardown(async () => {
    // Our connections go before the job ends, or QEMU cuts them under pending requests.
    await client?.close().catch(() => undefined);
    await vm.domain.abortJob().catch(() => undefined);
    await vm.cleanup();
    await rm(dir, { recursive: true, force: true });
    await rm(scratch, { force: true });
    await conn.close();
  });

  for (const w of beforeCheckpoint) await guestWrite(vm.domain, 0, w.pattern, w.offset, w.length);
  await vm.domain.createCheckpoint(checkpointSpec('base'));
  for (const w of afterCheckpoint) await guestWrite(vm.domain, 0, w.pattern, w.offset, w.length);

  await vm.domain.backupBegin({
    mode: 'pull',
    incremental: 'base',
    server: { transport: 'unix', socket },
    disks: [
      { name: 'vda', backup: 'yes', type: 'file', scratch: { file: scratch } },
      { name: 'vdb', backup: 'no' },
    ],
  });
  // The export is a point-in-time view: what the guest writes now must not show.
  await guestWrite(vm.domain, 0, 0xee, 1 * MiB, 64 * KiB);
  await guestWrite(vm.domain, 0, 0xef, 8 * MiB, 64 * KiB);

  client = await NbdClient.connect({ path: socket, exportName: 'vda', metaContexts: [BASE_ALLOCATION, DIRTY_CONTEXT] });
  await client.ready();
  t.is(client.size, 16 * MiB);
  t.true(client.readOnly);
  t.true(client.hasMetaContext(DIRTY_CONTEXT));
  const uri = unixUri(socket, 'vda');

  // The dirty extents are exactly the ranges written since the checkpoint, adjacent ones merged.
  const dirtyMap = await collect(client.extents(DIRTY_CONTEXT));
  const dirty = dirtyMap.filter((e) => e.flags & DirtyBitmapFlags.DIRTY).map(({ offset, length }) => ({ offset, length }));
  t.deepEqual(dirty, expectedDirty);
  t.deepEqual(dirtyMap, await nbdinfoMap(uri, DIRTY_CONTEXT));

  // Reading by the bitmap yields those bytes and no others, with the written patterns.
  const covered: Array<{ offset: number; length: number }> = [];
  for await (const chunk of client.chunks({ context: DIRTY_CONTEXT })) {
    const last = covered.at(-1);
    if (last && last.offset + last.length === chunk.offset) last.length += chunk.length;
    else covered.push({ offset: chunk.offset, length: chunk.length });
    t.is(chunk.kind, 'data', `dirty range at ${chunk.offset} read as data`);
    if (chunk.kind !== 'data') continue;
    const wrong = chunk.data.findIndex((byte, i) => byte !== expectedByte(chunk.offset + i));
    t.is(wrong, -1, `byte ${chunk.offset + wrong} holds what the guest wrote before the backup began`);
  }
  t.deepEqual(covered, expectedDirty);

  // Allocation status agrees with nbdinfo's.
  t.deepEqual(await collect(client.extents(BASE_ALLOCATION)), await nbdinfoMap(uri, BASE_ALLOCATION));

  // The whole disk, by plain reads and by the stream, equals what nbdcopy reads.
  const reference = join(dir, 'reference.raw');
  await run('nbdcopy', [uri, reference]);
  const expected = await readFile(reference);
  t.is(expected.length, client.size);
  t.true((await client.read(0, client.size)).equals(expected));
  const rebuilt = Buffer.alloc(client.size, 0x5a);
  let next = 0;
  for await (const chunk of client.chunks()) {
    t.is(chunk.offset, next);
    next = chunk.offset + chunk.length;
    if (chunk.kind === 'data') chunk.data.copy(rebuilt, chunk.offset);
    else rebuilt.fill(0, chunk.offset, chunk.offset + chunk.length);
  }
  t.is(next, client.size);
  t.true(rebuilt.equals(expected));
  // And both hold the point-in-time content, not the writes made during the backup.
  const wrong = expected.findIndex((byte, i) => byte !== expectedByte(i));
  t.is(wrong, -1, `byte ${wrong} of the export`);

  await client.close();
  client = undefined;
});
