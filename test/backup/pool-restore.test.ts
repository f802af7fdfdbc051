// Restore into a storage pool through libvirt streams, against the real daemon: every
// point of a chain equals the reference, holes are never sent, and a restore that cannot
// finish leaves the pool as it found it.
import { open, readFile } from 'node:fs/promises';

import test, { type ExecutionContext } from 'ava';

import { BackupSet, isBackupSetError, restoreToPool, type PoolRestoreResult } from '../../src/backup/index.js';
import type { Connection } from '../../src/index.js';
import { connectSystem } from '../helpers/daemon.js';
import { droppableConnection } from '../helpers/libvirt-admin.js';
import { run } from '../helpers/process.js';
import { createThrowawayPool, type ThrowawayPool } from '../helpers/storage-pool.js';
import { MiB, SetBuilder, TWO_DISKS, buildSet, imagesEqual, qemuImg } from './helpers.js';

async function poolFor(t: ExecutionContext, label: string): Promise<{ conn: Connection; throwaway: ThrowawayPool }> {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const throwaway = await createThrowawayPool(conn, label);
  t.teardown(throwaway.cleanup);
  return { conn, throwaway };
}

async function volumeNames(throwaway: ThrowawayPool): Promise<string[]> {
  return (await throwaway.pool.listAllVolumes()).map((volume) => volume.name).sort();
}

async function allocation(pool: string, volume: string): Promise<number> {
  const info = await run('virsh', ['-c', 'qemu:///system', 'vol-info', '--bytes', '--pool', pool, volume]);
  return Number(/Allocation:\s+(\d+)/.exec(info)?.[1]);
}

test('every point of a chain restores into new volumes equal to the reference, as qcow2 and raw', async (t) => {
  const builder = await buildSet(t, ['full', 'inc', 'diff', 'inc'], TWO_DISKS);
  const { conn, throwaway } = await poolFor(t, 'points');
  for (const backup of builder.set.backups) {
    for (const format of ['qcow2', 'raw'] as const) {
      const result = await restoreToPool(builder.set, { connection: conn, pool: throwaway.name, at: backup.id, format });
      t.deepEqual(
        result.disks.map((disk) => disk.volume),
        [`vm1-${backup.id}-vda.${format}`, `vm1-${backup.id}-vdb.${format}`],
      );
      for (const disk of result.disks) {
        t.true(await imagesEqual(disk.path, builder.referenceAt(disk.target, backup.id)), `${disk.target} at ${backup.id} (${format})`);
        const info = JSON.parse(await qemuImg('info', '--output=json', disk.path)) as { format: string; 'backing-filename'?: string };
        t.is(info.format, format);
        t.is(info['backing-filename'], undefined);
        if (format === 'qcow2') await qemuImg('check', disk.path);
        const volume = await throwaway.pool.lookupVolumeByName(disk.volume);
        t.is((await volume.getInfo()).capacity, disk.target === 'vda' ? 4 * MiB : 2 * MiB);
        await volume.delete();
      }
    }
  }
});

test('a sparse 1 GiB disk with 8 MiB of data sends about 8 MiB and stays sparse in the pool', async (t) => {
  const builder = await SetBuilder.create(t, [{ target: 'vda', sourceFormat: 'qcow2', size: 1024 * MiB }]);
  for (let index = 0; index < 8; index++) await builder.guestWrite('vda', { pattern: 0x40 + index, offset: index * 120 * MiB, length: MiB });
  await builder.backup('full');
  const { conn, throwaway } = await poolFor(t, 'sparse');
  const results: Record<string, PoolRestoreResult> = {};
  for (const format of ['raw', 'qcow2'] as const) {
    results[format] = await restoreToPool(builder.set, { connection: conn, pool: throwaway.name, format });
    const [disk] = results[format].disks;
    t.true(await imagesEqual(disk!.path, builder.referenceAt('vda', '0001')));
    // Data plus, for qcow2, its metadata (a few 64 KiB clusters); everything else went as holes.
    t.true(disk!.sent.dataBytes >= 8 * MiB && disk!.sent.dataBytes <= 8 * MiB + 512 * 1024, `${format}: ${disk!.sent.dataBytes} bytes sent`);
    // A raw volume is the whole disk: the rest went as holes. A qcow2 image stores only the data clusters.
    if (format === 'raw') t.is(disk!.sent.dataBytes + disk!.sent.holeBytes, 1024 * MiB);
    const allocated = await allocation(throwaway.name, disk!.volume);
    t.true(allocated >= 8 * MiB && allocated <= 10 * MiB, `${format}: ${allocated} bytes allocated`);
  }
});

test('an existing volume is never overwritten: the restore is refused before anything is made', async (t) => {
  const builder = await buildSet(t, ['full'], TWO_DISKS);
  const { conn, throwaway } = await poolFor(t, 'exists');
  const theirs = await throwaway.pool.createVolume({ name: 'vm1-0001-vdb.qcow2', capacity: MiB, format: 'raw' });
  await theirs.upload([{ kind: 'data', data: Buffer.alloc(MiB, 0x77) }]);
  const error = await t.throwsAsync(restoreToPool(builder.set, { connection: conn, pool: throwaway.name, format: 'qcow2' }));
  t.true(isBackupSetError(error, 'OUTPUT_EXISTS'));
  t.regex(error!.message, /volume 'vm1-0001-vdb\.qcow2' already exists in storage pool 'lvbt-exists-.*' on qemu:\/\/\/system; restore never overwrites/);
  t.deepEqual(await volumeNames(throwaway), ['vm1-0001-vdb.qcow2']);
  t.true((await readFile(await theirs.getPath())).equals(Buffer.alloc(MiB, 0x77)));
});

test('a missing or inactive pool is named in the error', async (t) => {
  const builder = await buildSet(t, ['full']);
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const error = await t.throwsAsync(restoreToPool(builder.set, { connection: conn, pool: 'lvbt-no-such-pool', format: 'raw' }));
  t.true(isBackupSetError(error, 'NOT_FOUND'));
  t.is(error!.message, "qemu:///system has no storage pool 'lvbt-no-such-pool' (virsh pool-list --all shows the pools)");
  await t.throwsAsync(restoreToPool(builder.set, { connection: conn, pool: 'x', format: 'vmdk' as 'raw' }), { message: /format must be 'qcow2' or 'raw'/ });
  await t.throwsAsync(restoreToPool(builder.set, { connection: conn, pool: 'x', format: 'raw', disk: 'vda', define: 'copy' }), { message: /every disk/ });
});

test('a restore aborted halfway deletes the volumes it made, and only those', async (t) => {
  const builder = await SetBuilder.create(t, [
    { target: 'vda', sourceFormat: 'qcow2', size: 64 * MiB },
    { target: 'vdb', sourceFormat: 'qcow2', size: 64 * MiB },
  ]);
  for (const target of ['vda', 'vdb']) await builder.guestWrite(target, { pattern: 0x55, offset: 0, length: 48 * MiB });
  await builder.backup('full');
  const { conn, throwaway } = await poolFor(t, 'aborted');
  const bystander = await throwaway.pool.createVolume({ name: 'bystander.raw', capacity: MiB, format: 'raw' });
  const controller = new AbortController();
  const aborted = restoreToPool(builder.set, {
    connection: conn,
    pool: throwaway.name,
    format: 'raw',
    signal: controller.signal,
    onProgress: ({ target, fraction }) => {
      if (target === 'vdb' && fraction > 0.3) controller.abort(new Error('stopped halfway'));
    },
  });
  await t.throwsAsync(aborted, { message: 'stopped halfway' });
  t.deepEqual(await volumeNames(throwaway), ['bystander.raw']);
  t.is((await bystander.getInfo()).capacity, MiB);
});

// The daemon drops the restore's connection halfway, as a restart or a network cut would.
test.serial('a restore that loses its connection halfway removes its volumes over a new one, or names each with the command that removes it', async (t) => {
  const builder = await SetBuilder.create(t, [
    { target: 'vda', sourceFormat: 'qcow2', size: 64 * MiB },
    { target: 'vdb', sourceFormat: 'qcow2', size: 64 * MiB },
  ]);
  for (const target of ['vda', 'vdb']) await builder.guestWrite(target, { pattern: 0x66, offset: 0, length: 48 * MiB });
  await builder.backup('full');
  const { throwaway } = await poolFor(t, 'lost');
  await throwaway.pool.createVolume({ name: 'bystander.raw', capacity: MiB, format: 'raw' });
  for (const reconnect of [true, false]) {
    const victim = await droppableConnection();
    t.teardown(() => victim.conn.close());
    const notices: string[] = [];
    let dropped = false;
    await t.throwsAsync(
      restoreToPool(builder.set, {
        connection: victim.conn,
        pool: throwaway.name,
        format: 'raw',
        onNotice: (message) => notices.push(message),
        onProgress: ({ target, fraction }) => {
          if (dropped || target !== 'vdb' || fraction < 0.3) return;
          dropped = true;
          victim.drop();
        },
        ...(reconnect ? { reconnect: () => connectSystem() } : {}),
      }),
    );
    t.true(dropped, 'the connection was dropped during the upload');
    if (reconnect) {
      t.deepEqual(await volumeNames(throwaway), ['bystander.raw'], 'both volumes removed over the new connection');
      t.deepEqual(
        notices.filter((notice) => notice.includes('could not remove')),
        [],
      );
      continue;
    }
    t.deepEqual(await volumeNames(throwaway), ['bystander.raw', 'vm1-0001-vda.raw', 'vm1-0001-vdb.raw']);
    const commands = notices.flatMap(
      (notice) => /^could not remove volume (\S+) after the failure \(.+\); remove it with: (virsh .*)$/.exec(notice)?.[2] ?? [],
    );
    t.is(commands.length, 2, notices.join('\n'));
    for (const command of commands) await run('sh', ['-c', command]);
    t.deepEqual(await volumeNames(throwaway), ['bystander.raw'], 'the commands the notices give remove the volumes');
  }
});

test('a damaged chain file fails the restore with CHECKSUM_MISMATCH and leaves no volume', async (t) => {
  const builder = await buildSet(t, ['full', 'inc']);
  const path = builder.set.pathOf('vda.0001.full.qcow2');
  const file = await open(path, 'r+');
  const { size } = await file.stat();
  // The last cluster holds guest data; one flipped byte there only the checksum can see.
  const byte = Buffer.alloc(1);
  await file.read(byte, 0, 1, size - 100);
  byte[0] = byte[0]! ^ 0xff;
  await file.write(byte, 0, 1, size - 100);
  await file.close();
  const { conn, throwaway } = await poolFor(t, 'damaged');
  const error = await t.throwsAsync(restoreToPool(builder.set, { connection: conn, pool: throwaway.name, format: 'qcow2' }));
  t.true(isBackupSetError(error, 'CHECKSUM_MISMATCH'), String(error));
  t.regex(error!.message, /vda\.0001\.full\.qcow2: checksum is .* the manifest says .*; the file is damaged/);
  t.deepEqual(await volumeNames(throwaway), []);
  const set = await BackupSet.open(builder.dir);
  t.teardown(() => set.close());
  const notices: string[] = [];
  const salvaged = await restoreToPool(set, {
    connection: conn,
    pool: throwaway.name,
    format: 'qcow2',
    verifyChecksums: false,
    onNotice: (message) => notices.push(message),
  });
  t.is(salvaged.disks.length, 1);
  t.true(notices.some((message) => /restored anyway because checksum verification is off/.test(message)));
});
