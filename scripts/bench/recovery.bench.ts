// Instant recovery: the time from `run` to a running domain for a 256 MiB and an 8 GiB
// point of random data (target: under 3 s for both, and flat in the size), and
// migrate-storage's throughput against our own restore of the same point (target:
// at least 0.7x). Sets are built once under .bench/recovery and reused. Medians of
// BENCH_RECOVERY_ROUNDS rounds; the library call and the whole command (a new
// process, from the sources through tsx) are timed apart.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

import { BackupSet, checksumFile, migrateStorage, restore, runFromBackup } from '../../src/backup/index.js';
import { connect, LibvirtError, UndefineFlags, type Connection } from '../../src/index.js';
import { median, sh } from './measure.js';

const ROUNDS = Number(process.env.BENCH_RECOVERY_ROUNDS ?? 3);
const RUN_SIZES_MIB = (process.env.BENCH_RECOVERY_RUN_MIB ?? '256,8192').split(',').map(Number);
const COPY_MIB = Number(process.env.BENCH_RECOVERY_COPY_MIB ?? 2048);
const here = dirname(fileURLToPath(import.meta.url));
const cacheDir = join(here, '..', '..', '.bench', 'recovery');
const cli = join(here, '..', '..', 'src', 'cli', 'main.ts');
const MiB = 2 ** 20;

function domainXml(name: string): string {
  const type = existsSync('/dev/kvm') ? 'kvm' : 'qemu';
  // Bench fixture only: the name is ours, nothing to escape.
  return (
    `<domain type='${type}'><name>${name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>` +
    `<os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>` +
    `<source file='/var/lib/libvirt/images/${name}-vda.qcow2'/><target dev='vda' bus='virtio'/></disk></devices></domain>`
  );
}

/** A set whose one backup is a full qcow2 of `sizeMiB` MiB of random data; built once. */
async function setOf(sizeMiB: number): Promise<string> {
  const dir = join(cacheDir, `set-${sizeMiB}M`);
  if (existsSync(join(dir, 'manifest.json')) && (await BackupSet.open(dir)).latest() !== null) return dir;
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(cacheDir, { recursive: true });
  const name = `bench-recovery-${sizeMiB}`;
  const set = await BackupSet.create(dir, { name, uuid: '3c1f9a2e-5b7d-4e8f-a0c1-' + sizeMiB.toString(16).padStart(12, '0'), xml: domainXml(name) });
  const file = 'vda.0001.full.qcow2';
  await set.beginRun([file]);
  const raw = join(cacheDir, `random-${sizeMiB}.raw`);
  sh('dd', ['if=/dev/urandom', `of=${raw}`, 'bs=1M', `count=${sizeMiB}`, 'status=none']);
  sh('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, set.pathOf(file)]);
  rmSync(raw);
  const info = JSON.parse(sh('qemu-img', ['info', '--output=json', set.pathOf(file)])) as { 'actual-size': number };
  const size = Number(sh('stat', ['-c', '%s', set.pathOf(file)]).trim());
  await set.commitBackup({
    id: '0001',
    level: 'full',
    transport: 'pull',
    startedAt: new Date().toISOString(),
    completedAt: new Date().toISOString(),
    checkpoint: null,
    checkpointXml: null,
    parent: null,
    disks: [
      {
        target: 'vda',
        sourceFormat: 'qcow2',
        level: 'full',
        file,
        backingFile: null,
        virtualSize: sizeMiB * MiB,
        fileSize: size,
        dataBytes: info['actual-size'],
        checksum: await checksumFile(set.pathOf(file)),
      },
    ],
  });
  await set.close();
  return dir;
}

async function removeDomain(connection: Connection, name: string): Promise<void> {
  const domain = await connection.lookupDomainByName(name).catch((error: unknown) => {
    if (error instanceof LibvirtError) return null;
    throw error;
  });
  if (domain === null) return;
  await domain.destroy().catch(() => undefined);
  await domain.undefine(UndefineFlags.CHECKPOINTS_METADATA).catch(() => undefined);
}

/** Seconds from the call to a running domain (the library), then from the command to its exit (a new process). */
async function timeRun(connection: Connection, dir: string, round: number): Promise<{ library: number; command: number }> {
  const overlays = mkdtempSync(join(tmpdir(), 'lvb-bench-overlays-'));
  const name = `lvb-bench-run-${process.pid}-${round}`;
  try {
    sh('sync', []);
    let start = performance.now();
    await runFromBackup({ dir, name, connection, overlayDir: overlays });
    const library = (performance.now() - start) / 1000;
    await removeDomain(connection, name);
    rmSync(overlays, { recursive: true, force: true });
    mkdirSync(overlays);
    sh('sync', []);
    start = performance.now();
    const child = spawnSync(process.execPath, ['--import=tsx', cli, 'run', dir, '--name', name, '--overlay-dir', overlays], { encoding: 'utf8' });
    const command = (performance.now() - start) / 1000;
    if (child.status !== 0) throw new Error(`run failed: ${child.stderr}`);
    const domain = await connection.lookupDomainByName(name);
    if (!(await domain.isActive())) throw new Error(`${name} is not running after run`);
    return { library, command };
  } finally {
    await removeDomain(connection, name);
    rmSync(overlays, { recursive: true, force: true });
  }
}

/** migrate-storage of a point's running domain against restore of the same point, in MiB/s. */
async function copyThroughput(connection: Connection, dir: string, round: number): Promise<{ migrate: number; restore: number }> {
  const work = mkdtempSync(join(tmpdir(), 'lvb-bench-copy-'));
  const name = `lvb-bench-migrate-${process.pid}-${round}`;
  try {
    await runFromBackup({ dir, name, connection, overlayDir: work });
    const permanent = join(work, 'permanent');
    mkdirSync(permanent);
    sh('sync', []);
    let start = performance.now();
    await migrateStorage({ connection, domain: name, to: { dir: permanent } });
    const migrateSeconds = (performance.now() - start) / 1000;
    const restored = join(work, 'restored');
    mkdirSync(restored);
    sh('sync', []);
    start = performance.now();
    await restore(await BackupSet.open(dir), { to: restored, format: 'qcow2' });
    const restoreSeconds = (performance.now() - start) / 1000;
    return { migrate: COPY_MIB / migrateSeconds, restore: COPY_MIB / restoreSeconds };
  } finally {
    await removeDomain(connection, name);
    rmSync(work, { recursive: true, force: true });
  }
}

const connection = await connect('qemu:///system');
try {
  console.log(`run: time to a running domain (median of ${ROUNDS}; target < 3 s, flat in size)`);
  console.log('| point | library call | whole command (new process) |');
  console.log('| --- | --- | --- |');
  const libraryMedians: number[] = [];
  for (const sizeMiB of RUN_SIZES_MIB) {
    const dir = await setOf(sizeMiB);
    const rounds = [];
    for (let round = 0; round < ROUNDS; round++) rounds.push(await timeRun(connection, dir, round));
    const library = median(rounds.map((r) => r.library));
    libraryMedians.push(library);
    console.log(
      `| ${sizeMiB >= 1024 ? `${sizeMiB / 1024} GiB` : `${sizeMiB} MiB`} | ${library.toFixed(2)} s | ${median(rounds.map((r) => r.command)).toFixed(2)} s |`,
    );
  }
  const flatness = Math.max(...libraryMedians) / Math.min(...libraryMedians);
  console.log(`largest / smallest: ${flatness.toFixed(2)}x`);

  console.log(`\nmigrate-storage vs restore of the same ${COPY_MIB} MiB point of random data (median of ${ROUNDS}; target >= 0.7x)`);
  const dir = await setOf(COPY_MIB);
  const rounds = [];
  for (let round = 0; round < ROUNDS; round++) rounds.push(await copyThroughput(connection, dir, round));
  const migrate = median(rounds.map((r) => r.migrate));
  const restored = median(rounds.map((r) => r.restore));
  console.log('| | MiB/s |');
  console.log('| --- | --- |');
  console.log(`| migrate-storage (restore of the point, block copy of the overlay while running, pivot) | ${migrate.toFixed(0)} |`);
  console.log(`| restore to qcow2 | ${restored.toFixed(0)} |`);
  console.log(`ratio: ${(migrate / restored).toFixed(2)}x`);
} finally {
  await connection.close();
}
