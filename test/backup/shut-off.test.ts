// Shut-off domains: read from their images with qemu-nbd (no guest code runs), with their
// checkpoints going on across shut-off and running periods; or started paused on request.
import { spawn } from 'node:child_process';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

import test from 'ava';

import { BackupSet, estimateBackup, restore } from '../../src/backup/index.js';
import { runBackup } from '../../src/backup/engine/engine.js';
import { qemuImgBitmaps } from '../../src/backup/qcow2/qemu-img.js';
import { DomainState, JobType, type Domain } from '../../src/index.js';
import { connectSystem } from '../helpers/daemon.js';
import { runCli } from '../cli/helpers.js';
import { imagesIdentical, mirroredDomain, type MirroredDomain } from './engine-helpers.js';
import { BackupError } from '../../src/backup/engine/engine-types.js';

async function assertOffAsBefore(t: { is: (a: unknown, b: unknown, m?: string) => void }, domain: Domain, xml: string): Promise<void> {
  t.is((await domain.getState()).state, DomainState.SHUTOFF, 'the domain is still shut off');
  t.is(await domain.getXMLDesc(), xml, 'its definition is unchanged');
}

async function restoresEqual(m: MirroredDomain, dest: string, points: Array<{ id: string; label: string }>): Promise<boolean[]> {
  const results: boolean[] = [];
  for (const [index, point] of points.entries()) {
    const out = join(m.dir, `restore-${index}`);
    await mkdir(out);
    const restored = await restore(await BackupSet.open(dest), { to: out, at: point.id, format: 'raw' });
    for (const [i, disk] of restored.disks.entries()) results.push(await imagesIdentical(disk.path, 'raw', m.referenceAt(point.label, i), 'raw'));
  }
  return results;
}

test('a shut-off domain: full and incremental from its images, then incremental while it runs and after it stops again; every point restores', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'shut-off', [{ sizeMiB: 32 }, { sizeMiB: 16, format: 'raw' }]);
  const dest = join(m.dir, 'set');
  const domain = m.vm.domain;
  await m.write(0, 0x11, '0', '4M');
  await m.write(1, 0x12, '0', '2M');
  await domain.destroy();
  const xml = await domain.getXMLDesc();
  const points: Array<{ id: string; label: string }> = [];

  await m.snapshot('full');
  const full = await runBackup({ domain: m.vm.name, dest, connection: conn });
  t.is(full.level, 'full');
  t.true(
    full.notices.some((notice) => /is shut off: its images are read with qemu-nbd, read-only; none of its code runs/.test(notice)),
    full.notices.join('\n'),
  );
  await assertOffAsBefore(t, domain, xml);
  t.deepEqual(
    (await qemuImgBitmaps(m.vm.disks[0]!.path)).map((bitmap) => [bitmap.name, bitmap.flags]),
    [[full.checkpoint, ['auto']]],
    'a recording bitmap named after the checkpoint, as libvirt makes one',
  );
  t.deepEqual(
    (await domain.listAllCheckpoints()).map((checkpoint) => checkpoint.name),
    [full.checkpoint],
  );
  points.push({ id: full.backupId, label: 'full' });

  await m.writeOffline(0, 0x21, '8M', '1M');
  await m.writeOffline(1, 0x22, '4M', '1M');
  await m.snapshot('off-inc');
  const estimate = await estimateBackup({ domain: m.vm.name, dest, connection: conn });
  t.like(estimate, { level: 'inc', parent: full.backupId });
  t.like(estimate.disks[0], { target: 'vda', level: 'inc', bytes: 1024 * 1024, basis: 'changed-since-checkpoint' });
  t.like(estimate.disks[1], { target: 'vdb', level: 'full', basis: 'allocated-data' });
  await assertOffAsBefore(t, domain, xml);
  const offInc = await runBackup({ domain: m.vm.name, dest, connection: conn });
  t.is(offInc.level, 'inc');
  t.like(offInc.disks[0], { target: 'vda', level: 'inc', dataBytes: 1024 * 1024 });
  t.like(offInc.disks[1], { target: 'vdb', level: 'full' });
  await assertOffAsBefore(t, domain, xml);
  points.push({ id: offInc.backupId, label: 'off-inc' });

  await domain.start();
  await m.write(0, 0x31, '12M', '1M');
  await m.snapshot('live-inc');
  const liveInc = await runBackup({ domain: m.vm.name, dest, connection: conn });
  t.is(liveInc.level, 'inc', 'the chain goes on once the domain runs');
  t.like(liveInc.disks[0], { level: 'inc', dataBytes: 1024 * 1024 });
  points.push({ id: liveInc.backupId, label: 'live-inc' });

  await domain.destroy();
  await m.writeOffline(0, 0x41, '20M', '1M');
  await m.snapshot('off-again');
  const offAgain = await runBackup({ domain: m.vm.name, dest, connection: conn, level: 'inc' });
  t.like(offAgain.disks[0], { level: 'inc', dataBytes: 1024 * 1024 });
  points.push({ id: offAgain.backupId, label: 'off-again' });

  t.deepEqual(await restoresEqual(m, dest, points), Array(points.length * 2).fill(true));
  t.is((await runCli(['verify', dest])).code, 0);
});

test('a shut-off domain with --start-paused runs no guest code and ends shut off; push without it is refused', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'start-paused', [{ sizeMiB: 16 }]);
  const dest = join(m.dir, 'set');
  const domain = m.vm.domain;
  await m.write(0, 0x51, '0', '2M');
  await domain.destroy();
  const xml = await domain.getXMLDesc();
  await m.snapshot('paused');

  const push = await runCli(['backup', m.vm.name, '--dest', dest, '--transport', 'push']);
  t.is(push.code, 2, push.stderr);
  t.regex(push.stderr, /is shut off: its images are read here \(pull\); a push backup needs libvirt's job, so start it paused for that \(--start-paused\)/);

  const paused = await runCli(['backup', m.vm.name, '--dest', dest, '--transport', 'push', '--start-paused']);
  t.is(paused.code, 0, paused.stderr);
  t.regex(paused.stderr, /started it paused for the backup/);
  t.regex(paused.stderr, /is shut off again/);
  await assertOffAsBefore(t, domain, xml);
  t.is((await domain.getJobInfo().catch(() => ({ type: JobType.NONE }))).type, JobType.NONE);
  const out = join(m.dir, 'restored');
  await mkdir(out);
  const restored = await restore(await BackupSet.open(dest), { to: out, format: 'raw' });
  t.true(await imagesIdentical(restored.disks[0]!.path, 'raw', m.referenceAt('paused', 0), 'raw'));
  t.not((await readFile(join(dest, 'manifest.json'), 'utf8')).length, 0);
});

// libvirt 9.0 killed while it starts a backup job may come back unable to load the
// domain's saved state, and report the running domain as shut off while its QEMU runs
// on (README, "Soak and fault injection"). A process that names itself that domain's
// QEMU, as libvirt starts one, stands for it here.
test('a domain libvirt reports shut off while its QEMU still runs here is refused, naming the process; nothing is read or started', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'orphan-qemu', [{ sizeMiB: 16 }]);
  await m.vm.domain.destroy();
  const xml = await m.vm.domain.getXMLDesc();
  const dest = join(m.dir, 'set');
  const orphan = spawn('/usr/bin/python3', ['-c', 'import time; time.sleep(600)', '-name', `guest=${m.vm.name},debug-threads=on`], {
    argv0: 'qemu-system-x86_64',
    stdio: 'ignore',
  });
  t.teardown(() => void orphan.kill('SIGKILL'));
  await new Promise<void>((resolve, reject) => orphan.once('spawn', resolve).once('error', reject));

  for (const options of [{}, { startPaused: true }, { transport: 'push' as const, startPaused: true }]) {
    const error = await t.throwsAsync(runBackup({ domain: m.vm.name, dest, connection: conn, ...options }), { instanceOf: BackupError });
    t.is((error as BackupError).code, 'DOMAIN_BUSY', JSON.stringify(options));
    t.regex(error!.message, new RegExp(`shut off, but its QEMU \\(pid ${orphan.pid}\\) still runs on this host`));
    t.regex(error!.message, /Nothing was backed up/);
  }
  await assertOffAsBefore(t, m.vm.domain, xml);
  t.deepEqual(await readdir(m.dir).then((entries) => entries.includes('set')), false, 'no set was created');

  const cli = await runCli(['backup', m.vm.name, '--dest', dest, '--json']);
  t.is(cli.code, 1, cli.stdout + cli.stderr);
  t.regex(cli.stdout, /"code":"DOMAIN_BUSY"/);

  // Without that process the same domain backs up from its images as any shut-off one.
  orphan.kill('SIGKILL');
  await new Promise((resolve) => orphan.once('exit', resolve));
  const backup = await runBackup({ domain: m.vm.name, dest, connection: conn });
  t.is(backup.level, 'full');
});
