// libvirtd killed while it starts or ends a backup job can come back having dropped the
// job but not QEMU's `backup-<disk>` bitmap, and every incremental of the domain then
// failed with "Bitmap already exists" until QEMU restarted. The stale bitmap is made
// here as QEMU would keep it (non-persistent, disabled, on the disk's format node).
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';

import test from 'ava';

import { BackupSet, restore } from '../../src/backup/index.js';
import { runBackup } from '../../src/backup/engine/engine.js';
import type { Domain } from '../../src/index.js';
import { connectSystem } from '../helpers/daemon.js';
import { imagesIdentical, mirroredDomain } from './engine-helpers.js';

interface Node {
  'node-name': string;
  'dirty-bitmaps'?: { name: string; persistent: boolean }[];
}

async function qmp(domain: Domain, execute: string, args?: object): Promise<unknown> {
  const reply = JSON.parse(await domain.qemuMonitorCommand(JSON.stringify(args ? { execute, arguments: args } : { execute }))) as {
    return?: unknown;
    error?: unknown;
  };
  if (reply.error !== undefined) throw new Error(`${execute}: ${JSON.stringify(reply.error)}`);
  return reply.return;
}

/** The bitmaps QEMU has on the node that carries the checkpoints' bitmaps. */
async function bitmapNode(domain: Domain): Promise<{ node: string; bitmaps: { name: string; persistent: boolean }[] }> {
  const nodes = (await qmp(domain, 'query-named-block-nodes', { flat: true })) as Node[];
  const node = nodes.find((candidate) => (candidate['dirty-bitmaps'] ?? []).some((bitmap) => bitmap.persistent));
  if (node === undefined) throw new Error('no node carries a checkpoint bitmap');
  return { node: node['node-name'], bitmaps: node['dirty-bitmaps'] ?? [] };
}

// A pull incremental from the latest checkpoint exports that checkpoint's own bitmap, so
// libvirt 9.0 makes no `backup-<disk>` bitmap for it; a push incremental always does.
test('a push incremental past a backup-<disk> bitmap left from a job libvirt lost: removed with a notice, the backup works and restores', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'stale-bitmap', [{ sizeMiB: 16 }]);
  const domain = m.vm.domain;
  const dest = join(m.dir, 'set');
  await m.write(0, 0x41, '0', '2M');
  await runBackup({ domain: m.vm.name, dest, connection: conn });
  await m.write(0, 0x42, '4M', '1M');
  await m.snapshot('changed');
  const { node } = await bitmapNode(domain);
  await qmp(domain, 'block-dirty-bitmap-add', { node, name: 'backup-vda', persistent: false, disabled: true });

  const result = await runBackup({ domain: m.vm.name, dest, connection: conn, level: 'inc', transport: 'push' });
  t.is(result.level, 'inc');
  t.true(
    result.notices.some((notice) => /removed the bitmap backup-vda that QEMU kept from a backup job libvirt no longer knows/.test(notice)),
    result.notices.join('\n'),
  );
  t.false(
    (await bitmapNode(domain)).bitmaps.some((bitmap) => bitmap.name === 'backup-vda'),
    'no backup-vda bitmap is left once the job ended',
  );
  const out = join(m.dir, 'restore');
  await mkdir(out);
  const restored = await restore(await BackupSet.open(dest), { to: out, at: result.backupId, format: 'raw' });
  t.true(await imagesIdentical(restored.disks[0]!.path, 'raw', m.referenceAt('changed', 0), 'raw'), 'the point restores to the disk as it was');
});
