// The header facts the set's checks use, read in-process, against what qemu-img says of
// the same files; and the files our reader refuses, which qemu-img answers for.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { readImageHeader } from '../../src/backup/qcow2/image-header.js';
import { BackupSetError } from '../../src/backup/errors.js';
import { assertChainIntact } from '../../src/backup/set/chain-check.js';
import { SetBuilder, tempDir } from './helpers.js';
import { MiB, createImage, qemuImg } from './qcow2-helpers.js';

async function qemuImgSays(path: string): Promise<{ format: string; backingFilename: string | null; virtualSize: number }> {
  const info = JSON.parse(await qemuImg('info', '--output=json', '-U', path)) as { format: string; 'backing-filename'?: string; 'virtual-size': number };
  return { format: info.format, backingFilename: info['backing-filename'] ?? null, virtualSize: info['virtual-size'] };
}

/** Runs `body` with qemu-img out of reach: whatever it answers was read without it. */
async function withoutQemuImg<T>(body: () => Promise<T>): Promise<T> {
  const saved = process.env['LIBVIRT_BACKUP_QEMU_IMG'];
  process.env['LIBVIRT_BACKUP_QEMU_IMG'] = '/nonexistent/qemu-img';
  try {
    return await body();
  } finally {
    if (saved === undefined) delete process.env['LIBVIRT_BACKUP_QEMU_IMG'];
    else process.env['LIBVIRT_BACKUP_QEMU_IMG'] = saved;
  }
}

test.serial('qcow2 files are read without qemu-img, with the facts qemu-img gives', async (t) => {
  const dir = await tempDir(t, 'image-header-');
  const base = join(dir, 'base.qcow2');
  const relative = join(dir, 'relative.qcow2');
  const absolute = join(dir, 'absolute.qcow2');
  const oldFormat = join(dir, 'v2.qcow2');
  const bigClusters = join(dir, 'big-clusters.qcow2');
  const oddSize = join(dir, 'odd-size.qcow2');
  await createImage({ path: base, size: 1024 * MiB });
  await createImage({ path: relative, size: 1024 * MiB, backing: base });
  await qemuImg('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', absolute);
  await createImage({ path: oldFormat, size: 64 * MiB, options: { compat: '0.10' } });
  await createImage({ path: bigClusters, size: 3 * 1024 * MiB, options: { cluster_size: '2M' } });
  await createImage({ path: oddSize, size: 1_000_000 });
  for (const path of [base, relative, absolute, oldFormat, bigClusters, oddSize]) {
    const expected = await qemuImgSays(path);
    t.deepEqual(await withoutQemuImg(() => readImageHeader(path)), expected, path);
  }
  t.is((await readImageHeader(relative)).backingFilename, 'base.qcow2', 'a relative backing name stays as stored');
  t.is((await readImageHeader(absolute)).backingFilename, base);
});

test.serial('a file our reader refuses is what qemu-img says it is', async (t) => {
  const dir = await tempDir(t, 'image-header-');
  const raw = join(dir, 'disk.raw');
  await writeFile(raw, Buffer.alloc(MiB, 7));
  // An internal snapshot is valid qcow2 our reader does not read.
  const snapshotted = join(dir, 'snapshotted.qcow2');
  await createImage({ path: join(dir, 'base.qcow2'), size: 16 * MiB });
  await createImage({ path: snapshotted, size: 16 * MiB, backing: join(dir, 'base.qcow2') });
  await qemuImg('snapshot', '-c', 'before', snapshotted);
  for (const path of [raw, snapshotted]) {
    t.deepEqual(await readImageHeader(path), await qemuImgSays(path), path);
    const error = await t.throwsAsync(
      withoutQemuImg(() => readImageHeader(path)),
      { instanceOf: BackupSetError },
    );
    t.is(error?.code, 'QEMU_IMG_FAILED', 'answered by qemu-img, not by the reader');
  }
  t.is((await readImageHeader(raw)).format, 'raw');
  t.is((await readImageHeader(snapshotted)).backingFilename, 'base.qcow2');
});

test('a missing file and an aborted read are errors that say so', async (t) => {
  const dir = await tempDir(t, 'image-header-');
  const missing = join(dir, 'missing.qcow2');
  const error = await t.throwsAsync(readImageHeader(missing));
  t.true(error?.message.includes(missing), error?.message);
  const controller = new AbortController();
  controller.abort();
  await createImage({ path: join(dir, 'present.qcow2'), size: MiB });
  const aborted = await t.throwsAsync(readImageHeader(join(dir, 'present.qcow2'), { signal: controller.signal }), { instanceOf: BackupSetError });
  t.is(aborted?.code, 'ABORTED');
});

test.serial('the chain of a set is checked, and a backup committed, without a qemu-img process per file', async (t) => {
  const builder = await SetBuilder.create(t, [{ target: 'vda', sourceFormat: 'qcow2', size: 64 * MiB }]);
  await builder.backup('full');
  for (const [index, offset] of [0, 16, 32].entries()) {
    await builder.guestWrite('vda', { pattern: 0x21 + index, offset: offset * MiB, length: MiB });
    // The builder's own qemu-img calls are not the set's: only the commit's checks go without.
    await withoutQemuImg(() => builder.backup('inc'));
  }
  const chain = builder.set.chainFor('vda');
  t.is(chain.length, 4);
  await t.notThrowsAsync(withoutQemuImg(() => assertChainIntact(builder.set, chain)));
  // A header that names another backing file than the manifest is still caught.
  const top = chain.at(-1)!;
  await qemuImg('rebase', '-u', '-f', 'qcow2', '-F', 'qcow2', '-b', chain[0]!.disk.file, top.path);
  const error = await t.throwsAsync(
    withoutQemuImg(() => assertChainIntact(builder.set, chain)),
    { instanceOf: BackupSetError },
  );
  t.is(error?.code, 'CHAIN_BROKEN');
  t.true(error?.message.includes(`backing file is ${chain[0]!.disk.file} but the manifest says ${chain[2]!.disk.file}`), error?.message);
});
