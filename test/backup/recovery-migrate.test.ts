// migrate-storage: the disks of a domain run from a backup move to their permanent
// place while the guest writes; the pivot keeps every write, the overlays and the
// set's record go, and prune works again. Stopped halfway, the domain runs on its
// overlays as before, and a second attempt completes.
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import test from 'ava';

import { BackupSet, isRecoveryError, libvirtSetUserCheck, migrateStorage, prune, readSetUsers, type MigrateStorageEvent } from '../../src/backup/index.js';
import type { Domain } from '../../src/index.js';
import { connectSystem, guestWrite } from '../helpers/daemon.js';
import { createThrowawayPool } from '../helpers/storage-pool.js';
import { run } from '../helpers/process.js';
import { imagesIdentical } from './engine-helpers.js';
import { backedUpDomain, diskSources, recoveredVm } from './recovery-helpers.js';

const MiB = 1024 * 1024;

async function permanentDir(t: { teardown(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'lvb-permanent-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Writes into the running guest (and into `references`) until stopped, one 64 KiB write after another. */
function continuousWriter(domain: Domain, references: string[]): { readonly count: number; stop(): Promise<number> } {
  let stopped = false;
  let count = 0;
  const loop = (async () => {
    while (!stopped) {
      const disk = count % 2;
      const pattern = 0x30 + (count % 64);
      const offset = ((count * 7) % 200) * 64 * 1024;
      await guestWrite(domain, disk, pattern, offset, '64k');
      await run('qemu-io', ['-f', 'raw', '-c', `write -P 0x${pattern.toString(16)} ${offset} 64k`, references[disk]!]);
      count += 1;
    }
  })();
  return {
    get count() {
      return count;
    },
    async stop() {
      stopped = true;
      await loop;
      return count;
    },
  };
}

test('migrate-storage while the guest writes: the permanent disks hold every write, the overlays and the record are gone, prune works', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const { m, dest, points } = await backedUpDomain(t, conn, 'migrate');
  const { result, domain } = await recoveredVm(t, conn, dest, points[0]);
  const to = await permanentDir(t);
  // The truth: the point's content plus every write the writer makes.
  const references = [0, 1].map((index) => join(to, `expected-${index}.raw`));
  for (const [index, reference] of references.entries()) await run('cp', ['--sparse=always', m.referenceAt(points[0]!, index), reference]);
  // The copy moves what the guest wrote since the run (the point itself is restored):
  // 12 MiB of it per disk, at a limited bandwidth, keep the copies running for a few
  // seconds of further writes.
  for (const [index, reference] of references.entries()) {
    await guestWrite(domain, index, 0x5a, 4 * MiB, '12M');
    await run('qemu-io', ['-f', 'raw', '-c', `write -P 0x5a ${4 * MiB} 12M`, reference]);
  }

  const writer = continuousWriter(domain, references);
  const events: MigrateStorageEvent[] = [];
  const writesAt: Partial<Record<MigrateStorageEvent['type'], number>> = {};
  const migrated = await migrateStorage({
    connection: conn,
    domain: domain.name,
    to: { dir: to },
    bandwidth: 2 * MiB,
    onEvent: (event) => {
      events.push(event);
      writesAt[event.type] ??= writer.count;
    },
  });
  await writer.stop();
  const writesDuringCopy = (writesAt.ready ?? 0) - (writesAt.copy ?? 0);
  t.true(writesDuringCopy >= 5, `the guest wrote ${writesDuringCopy} times while the disks were copied`);
  t.deepEqual(
    events.filter((event) => event.type === 'notice' && /restoring point/.test(event.message)).length,
    2,
    'each permanent image was restored from the point, and the copy moved only the overlay',
  );

  t.deepEqual(
    migrated.disks.map((disk) => disk.to),
    [join(to, `${domain.name}-vda.qcow2`), join(to, `${domain.name}-vdb.qcow2`)],
  );
  t.deepEqual(await diskSources(domain.name), { vda: migrated.disks[0]!.to, vdb: migrated.disks[1]!.to });
  t.deepEqual(await diskSources(domain.name, true), { vda: migrated.disks[0]!.to, vdb: migrated.disks[1]!.to }, 'the persistent definition too');
  t.true(
    events.some((event) => event.type === 'progress'),
    'progress reported',
  );
  for (const overlay of result.overlays)
    t.false((await readdir(join(overlay.path, '..'))).includes(overlay.path.split('/').at(-1)!), `${overlay.path} removed`);
  t.is(migrated.releasedSet, dest);
  t.deepEqual(await readSetUsers(dest), []);

  await domain.destroy();
  for (const [index, disk] of migrated.disks.entries()) {
    const chain = JSON.parse(await run('qemu-img', ['info', '--backing-chain', '--output=json', disk.to])) as unknown[];
    t.is(chain.length, 1, `${disk.target} stands alone`);
    t.true(await imagesIdentical(disk.to, 'qcow2', references[index]!, 'raw'), `${disk.target} holds the point and every write`);
  }

  const checker = libvirtSetUserCheck(conn);
  t.teardown(() => checker.close());
  const set = await BackupSet.openForWrite(dest);
  t.teardown(() => set.close());
  const pruned = await prune(set, { keep: 1, checkSetUser: checker.check });
  t.deepEqual(pruned.removed, [points[0]]);
});

test('migrate-storage stopped halfway: the domain runs on its overlays, the copies are gone; a second attempt completes', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const { dest, points } = await backedUpDomain(t, conn, 'migrate-abort');
  const { result, domain } = await recoveredVm(t, conn, dest, points[1]);
  const to = await permanentDir(t);
  const overlays = Object.fromEntries(result.overlays.map((overlay) => [overlay.target, overlay.path]));
  // What the copy moves onto the restored point: 4 MiB per disk, 8 s at this bandwidth.
  for (const index of [0, 1]) await guestWrite(domain, index, 0x33, '1M', '4M');

  const controller = new AbortController();
  const stopped = await t.throwsAsync(
    migrateStorage({
      connection: conn,
      domain: domain.name,
      to: { dir: to },
      bandwidth: 512 * 1024,
      signal: controller.signal,
      onEvent: (event) => {
        if (event.type === 'progress' && event.bytesCopied > 0) controller.abort();
      },
    }),
  );
  t.true(isRecoveryError(stopped, 'ABORTED'), String(stopped));
  t.true(await domain.isActive());
  t.deepEqual(await diskSources(domain.name), overlays, 'still on the overlays');
  t.is(await domain.getBlockJobInfo('vda'), null, 'no copy left running');
  t.deepEqual(await readdir(to), [], 'the partial copies are removed');
  t.is((await readSetUsers(dest)).length, 1, 'still recorded');

  await guestWrite(domain, 0, 0x5a, '4M', '64k');
  const migrated = await migrateStorage({ connection: conn, domain: domain.name, to: { dir: to } });
  t.is(migrated.disks.length, 2);
  t.deepEqual(await diskSources(domain.name), { vda: migrated.disks[0]!.to, vdb: migrated.disks[1]!.to });
  await domain.destroy();
  await run('qemu-io', ['-r', '-f', 'qcow2', '-c', 'read -P 0x5a 4M 64k', migrated.disks[0]!.to]);

  const again = await t.throwsAsync(migrateStorage({ connection: conn, domain: domain.name, to: { dir: to } }));
  t.true(isRecoveryError(again, 'DOMAIN_NOT_RUNNING'), String(again));
});

test('migrate-storage --pool: each disk becomes a new volume of the pool; the domain runs on the volumes', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const { m, dest, points } = await backedUpDomain(t, conn, 'migrate-pool');
  const { domain } = await recoveredVm(t, conn, dest, points[1]);
  const pool = await createThrowawayPool(conn, 'migrate-pool');
  t.teardown(() => pool.cleanup());

  const migrated = await migrateStorage({ connection: conn, domain: domain.name, to: { pool: pool.name } });
  t.deepEqual(
    migrated.disks.map((disk) => disk.to),
    [`${pool.name}/${domain.name}-vda.qcow2`, `${pool.name}/${domain.name}-vdb.qcow2`],
  );
  const paths = [join(pool.path, `${domain.name}-vda.qcow2`), join(pool.path, `${domain.name}-vdb.qcow2`)];
  t.deepEqual(Object.values(await diskSources(domain.name)), paths);
  await domain.destroy();
  for (const [index, path] of paths.entries()) t.true(await imagesIdentical(path, 'qcow2', m.referenceAt(points[1]!, index), 'raw'), path);
});
