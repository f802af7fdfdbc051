// Compressed backups against the real daemon: zstd and zlib sets, full and incremental,
// with a plain backup in the middle of the chain. Every point restores equal to what
// the disk held; qemu-img checks every file clean and converts every chain to the same
// bytes; unwritten ranges stay unallocated; verify finds nothing wrong, and prune's
// merge keeps the points it keeps restorable.
import { mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

import test from 'ava';

import { BackupSet, BackupError, prune, restore, runBackup, verify } from '../../src/backup/index.js';
import { connectSystem } from '../helpers/daemon.js';
import { run } from '../helpers/process.js';
import { imagesIdentical, mirroredDomain } from './engine-helpers.js';

const MiB = 2 ** 20;

for (const compress of ['zstd', 'zlib'] as const) {
  test(`${compress}: full, inc, plain inc, inc restore to the references; qemu-img checks and converts every chain`, async (t) => {
    const conn = await connectSystem();
    t.teardown(() => conn.close());
    const m = await mirroredDomain(t, conn, `cmp-${compress}`, [{ sizeMiB: 64 }]);
    const dest = join(m.dir, 'set');
    const backup = (options: { compress?: 'zstd' | 'zlib' }) => runBackup({ domain: m.vm.name, dest, connection: conn, ...options });

    await m.write(0, 0x11, '0', '4M');
    await m.write(0, 0x12, '40M', '1M');
    const full = await backup({ compress });
    t.is(full.level, 'full');
    await m.snapshot(full.backupId);
    const fullDisk = full.disks[0]!;
    t.is(fullDisk.compression, compress);
    t.is(fullDisk.dataBytes, 5 * MiB);
    // One-byte patterns shrink to almost nothing: the file holds little more than its metadata.
    t.true(fullDisk.storedBytes! < MiB, `${fullDisk.storedBytes} bytes stored`);
    const fullPath = join(dest, fullDisk.file);
    const fullStat = await stat(fullPath);
    t.is(fullStat.size, fullDisk.fileSize);
    t.true(fullStat.blocks * 512 <= fullDisk.storedBytes! + 64 * 1024, `${fullStat.blocks * 512} bytes allocated`);
    // Holes stay holes: only the 80 written clusters are allocated.
    const fullCheck = JSON.parse(await run('qemu-img', ['check', '--output=json', fullPath])) as Record<string, number>;
    t.is(fullCheck['allocated-clusters'], 80);
    t.is(fullCheck['compressed-clusters'], 80);

    await m.write(0, 0x21, '1M', '64k');
    await m.write(0, 0x22, '8M', '128k');
    const inc1 = await backup({ compress });
    t.is(inc1.level, 'inc');
    t.is(inc1.disks[0]!.compression, compress);
    await m.snapshot(inc1.backupId);

    await m.write(0, 0x31, '20M', '1M');
    const plain = await backup({});
    t.is(plain.level, 'inc');
    t.is(plain.disks[0]!.compression, undefined);
    t.is(plain.disks[0]!.storedBytes, undefined);
    await m.snapshot(plain.backupId);

    await m.write(0, 0x41, '0', '64k');
    await m.write(0, 0x00, '40M', '64k');
    const inc2 = await backup({ compress });
    t.is(inc2.level, 'inc');
    await m.snapshot(inc2.backupId);

    const set = await BackupSet.open(dest);
    for (const point of [full, inc1, plain, inc2]) {
      const file = join(dest, point.disks[0]!.file);
      const check = await run('qemu-img', ['check', file]);
      t.regex(check, /No errors were found/, `${point.backupId}: ${check}`);
      const out = join(m.dir, `restore-${point.backupId}`);
      await mkdir(out);
      const restored = await restore(set, { to: out, at: point.backupId, format: 'raw' });
      const restoredPath = restored.disks[0]!.path;
      t.true(await imagesIdentical(restoredPath, 'raw', m.referenceAt(point.backupId, 0), 'raw'), `restore of ${point.backupId}`);
      // qemu-img reads the chain up to this point to the same bytes.
      const converted = join(m.dir, `converted-${point.backupId}.raw`);
      await run('qemu-img', ['convert', '-U', '-f', 'qcow2', '-O', 'raw', file, converted]);
      t.true(await imagesIdentical(converted, 'raw', restoredPath, 'raw'), `qemu-img convert of ${point.backupId}`);
    }
    const report = await verify(set);
    t.true(report.ok, JSON.stringify(report.problems));

    // Prune merges the compressed full and the first incremental into a new file; the
    // points kept still restore to their references.
    const writable = await BackupSet.openForWrite(dest);
    try {
      await prune(writable, { keep: 2 });
    } finally {
      await writable.close();
    }
    const pruned = await BackupSet.open(dest);
    t.deepEqual(
      pruned.backups.map((b) => b.id),
      [plain.backupId, inc2.backupId],
    );
    // The merged point is written anew by qemu-img; the compressed one above it keeps its clusters.
    t.is(pruned.backups[0]!.disks[0]!.compression, undefined);
    t.is(pruned.backups[1]!.disks[0]!.compression, compress);
    t.true((await verify(pruned)).ok);
    for (const point of [plain, inc2]) {
      const out = join(m.dir, `pruned-${point.backupId}`);
      await mkdir(out);
      const restored = await restore(pruned, { to: out, at: point.backupId, format: 'raw' });
      t.true(await imagesIdentical(restored.disks[0]!.path, 'raw', m.referenceAt(point.backupId, 0), 'raw'), `after prune: ${point.backupId}`);
    }
  });
}

test('compress is refused with push, and any other value, before anything is created', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'cmp-refuse', [{ sizeMiB: 16 }]);
  const dest = join(m.dir, 'set');
  const push = await t.throwsAsync(runBackup({ domain: m.vm.name, dest, connection: conn, transport: 'push', compress: 'zstd' }), {
    instanceOf: BackupError,
  });
  t.is(push.code, 'INVALID_ARGUMENT');
  t.regex(push.message, /compress needs the pull transport/);
  const other = await t.throwsAsync(runBackup({ domain: m.vm.name, dest, connection: conn, compress: 'lz4' as 'zstd' }), { instanceOf: BackupError });
  t.regex(other.message, /compress must be zstd or zlib, got 'lz4'/);
  await t.throwsAsync(stat(dest));
});
