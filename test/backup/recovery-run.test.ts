// run: a new domain straight from an older point of a two-disk set. Its disks hold
// exactly that point (read through the overlay chains by qemu-img), its writes never
// reach the set (verify's checksums), and the set refuses to prune what it runs from.
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

import test from 'ava';

import { BackupSet, isBackupSetError, libvirtSetUserCheck, prune, readSetUsers, runFromBackup, verify } from '../../src/backup/index.js';
import { isRecoveryError } from '../../src/backup/index.js';
import { connectSystem, guestWrite, uniqueName } from '../helpers/daemon.js';
import { run } from '../helpers/process.js';
import { imagesIdentical } from './engine-helpers.js';
import { backedUpDomain, diskSources, recoveredVm } from './recovery-helpers.js';

async function fileStates(dir: string): Promise<Record<string, string>> {
  const states: Record<string, string> = {};
  for (const entry of (await readdir(dir)).filter((name) => name.endsWith('.qcow2'))) {
    const info = await stat(join(dir, entry));
    states[entry] = `${info.size}:${info.mtimeMs}`;
  }
  return states;
}

test('run from the older point of a two-disk set: the domain runs on that point; its writes leave the set unchanged; prune refuses it', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const { m, dest, points } = await backedUpDomain(t, conn, 'run-old');
  const before = await fileStates(dest);

  const { result, domain } = await recoveredVm(t, conn, dest, points[0]);
  t.true(await domain.isActive());
  t.is(result.backupId, points[0]!);
  t.not(domain.uuid, m.vm.domain.uuid, 'a UUID of its own');
  t.deepEqual(
    result.overlays.map((overlay) => overlay.target),
    ['vda', 'vdb'],
  );
  t.deepEqual(await diskSources(domain.name), Object.fromEntries(result.overlays.map((overlay) => [overlay.target, overlay.path])));
  for (const [index, overlay] of result.overlays.entries()) {
    t.true(await imagesIdentical(overlay.path, 'qcow2', m.referenceAt(points[0]!, index), 'raw'), `${overlay.target} holds point ${points[0]}`);
    t.false(await imagesIdentical(overlay.path, 'qcow2', m.referenceAt(points[1]!, index), 'raw'), `${overlay.target} is not the newer point`);
  }

  // The recovered guest writes: into its overlays only.
  await guestWrite(domain, 0, 0x77, 0, '1M');
  await guestWrite(domain, 1, 0x78, '8M', '1M');
  await run('qemu-io', ['-r', '-U', '-f', 'qcow2', '-c', 'read -P 0x77 0 1M', result.overlays[0]!.path]);
  t.deepEqual(await fileStates(dest), before, 'no file of the set changed');
  const set = await BackupSet.open(dest);
  const report = await verify(set);
  t.true(report.ok, JSON.stringify(report.problems));

  const users = await readSetUsers(dest);
  t.is(users.length, 1);
  t.is(users[0]!.user.domain.name, domain.name);
  t.is(users[0]!.user.backupId, points[0]!);

  const checker = libvirtSetUserCheck(conn);
  t.teardown(() => checker.close());
  const writable = await BackupSet.openForWrite(dest);
  t.teardown(() => writable.close());
  const refused = await t.throwsAsync(prune(writable, { keep: 1, checkSetUser: checker.check }));
  t.true(isBackupSetError(refused, 'SET_IN_USE'), String(refused));
  t.regex(refused!.message, new RegExp(`domain '${domain.name}' .*running.* runs from backup ${points[0]}`));
  t.deepEqual(await fileStates(dest), before, 'the refused prune changed nothing');
});

test('a record whose domain is gone is stale: prune removes it and goes ahead', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const { dest, points } = await backedUpDomain(t, conn, 'run-stale');
  const { domain } = await recoveredVm(t, conn, dest, points[0]);
  await domain.destroy();
  // Shut off, still defined on its overlays: still in use.
  const checker = libvirtSetUserCheck(conn);
  t.teardown(() => checker.close());
  const set = await BackupSet.openForWrite(dest);
  t.teardown(() => set.close());
  const refused = await t.throwsAsync(prune(set, { keep: 1, checkSetUser: checker.check }));
  t.regex(refused!.message, /shut off/);
  // Without a way to ask libvirt, a record is never taken for stale.
  await t.throwsAsync(prune(set, { keep: 1 }), { message: /not checked/ });

  await domain.undefine();
  const pruned = await prune(set, { keep: 1, checkSetUser: checker.check });
  t.deepEqual(pruned.removed, [points[0]]);
  t.deepEqual(pruned.staleSetUsers, [{ domain: domain.name, reason: `domain '${domain.name}' no longer exists` }]);
  t.deepEqual(await readSetUsers(dest), []);
});

test('run refuses a name in use, an unknown point, and leaves nothing behind', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const { m, dest } = await backedUpDomain(t, conn, 'run-refuse');
  const taken = await t.throwsAsync(runFromBackup({ dir: dest, name: m.vm.name, connection: conn }));
  t.true(isRecoveryError(taken, 'DOMAIN_EXISTS'), String(taken));
  const unknown = await t.throwsAsync(runFromBackup({ dir: dest, at: '0099', name: uniqueName('run'), connection: conn }));
  t.true(isBackupSetError(unknown, 'NOT_FOUND'), String(unknown));
  t.deepEqual(await readSetUsers(dest), []);
});
