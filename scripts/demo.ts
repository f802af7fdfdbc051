// The README's main job: on a throwaway VM it creates and removes itself, take a
// full and an incremental backup while the "guest" writes, restore the latest
// point and prove with qemu-img that it equals the disk.
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { runBackup, type BackupEvent } from '../src/backup/engine/engine.js';
import { BackupSet, formatListTable, listBackups, restore, verify } from '../src/backup/index.js';
import { formatVersion } from '../src/index.js';
import { connectSystem, createThrowawayDomain, guestWrite } from '../test/helpers/daemon.js';
import { run } from '../test/helpers/process.js';

const conn = await connectSystem();
console.log(`connected to ${await conn.getURI()} (libvirt ${formatVersion(await conn.getLibVersion())}, QEMU ${formatVersion(await conn.getVersion())})`);
const vm = await createThrowawayDomain(conn, 'demo', [
  { format: 'qcow2', sizeMiB: 256 },
  { format: 'raw', sizeMiB: 64 },
]);
const work = await mkdtemp(join(tmpdir(), 'libvirt-backup-demo-'));
const dest = join(work, 'backups');
const log = (event: BackupEvent) => {
  if (event.type === 'start') console.log(`  backup ${event.backupId}: ${event.level} over ${event.transport} (${event.reason})`);
  if (event.type === 'notice') console.log(`  note: ${event.message}`);
  if (event.type === 'done') console.log(`  done in ${event.durationMs} ms, ${(event.dataBytes / 2 ** 20).toFixed(1)} MiB copied`);
};
try {
  console.log(`domain ${vm.name}: vda qcow2 256 MiB, vdb raw 64 MiB`);
  await guestWrite(vm.domain, 0, 0x5a, '0', '32M');
  await guestWrite(vm.domain, 1, 0x33, '1M', '4M');
  await runBackup({ domain: vm.name, dest, connection: conn, onEvent: log });
  await guestWrite(vm.domain, 0, 0xa5, '100M', '8M');
  await runBackup({ domain: vm.name, dest, connection: conn, onEvent: log });

  const set = await BackupSet.open(dest);
  console.log(formatListTable(listBackups(set)));
  const report = await verify(set);
  console.log(`verify: ${report.ok ? 'ok' : 'PROBLEMS'} (${report.problems.length} problems)`);

  await vm.domain.destroy();
  const restoreDir = join(work, 'restored');
  await mkdir(restoreDir);
  const restored = await restore(set, { to: restoreDir, format: 'qcow2' });
  for (const [i, disk] of restored.disks.entries()) {
    const live = vm.disks[i]!;
    const compare = await run('qemu-img', ['compare', '-f', 'qcow2', '-F', live.format, disk.path, live.path]);
    console.log(`restore of ${disk.target} vs the disk: ${compare.trim()}`);
  }
  console.log(
    `qemu-img sees a plain chain: ${(await run('qemu-img', ['info', '--backing-chain', set.pathOf(set.latest()!.disks[0]!.file)]))
      .split('\n')
      .filter((l) => l.startsWith('image:'))
      .join(' <- ')}`,
  );
} finally {
  await vm.cleanup();
  await rm(work, { recursive: true, force: true });
  await conn.close();
}
console.log('done: domain, images and backups removed');
