// Compressed backups of a realistic disk: an ext4 file system filled from a large system
// directory (`mkfs.ext4 -d`, default /usr), as qcow2, attached to a running domain.
// Our zstd and zlib full backups against, in the same run, `qemu-img convert -c -O qcow2
// -o compression_type=zstd` of the same image file and `virtnbdbackup --compress` of
// an identical domain: time, bytes stored, ratio. Full backups alternate with their
// peers round by round (medians reported); the machine's load is printed with them.
//
//   BENCH_COMPRESS_DIR=/usr/lib BENCH_COMPRESS_ROUNDS=3 npm run bench -- compress
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { runBackup } from '../../src/backup/engine/engine.js';
import { connectSystem, createThrowawayDomain } from '../../test/helpers/daemon.js';
import { waitForSettledGuests } from './settled-guests.js';
import { median, sh, timed, timedAsync } from './measure.js';

const SOURCE_DIR = process.env.BENCH_COMPRESS_DIR ?? '/usr';
const ROUNDS = Number(process.env.BENCH_COMPRESS_ROUNDS ?? 1);
const cacheDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '.bench', 'compress');
const baseImage = join(cacheDir, `ext4-${SOURCE_DIR.replace(/\W+/g, '_')}.qcow2`);

/** Bytes a file or directory takes on disk (allocated blocks: holes count for nothing). */
function storedBytes(path: string): number {
  return Number(sh('du', ['-s', '-B1', path]).split(/\s/)[0]);
}

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;

/** The ext4 image, made once and cached: sized for the directory plus a quarter, the rest of it never written. */
function ensureBaseImage(): void {
  if (existsSync(baseImage)) return;
  mkdirSync(cacheDir, { recursive: true });
  const used = Number(sh('du', ['-s', '-B1', '-x', SOURCE_DIR]).split(/\s/)[0]);
  const size = Math.ceil((used * 1.25 + 256 * 2 ** 20) / 2 ** 20);
  const raw = `${baseImage}.raw`;
  console.log(`making a ${size} MiB ext4 image of ${SOURCE_DIR} (${mib(used)}; cached in ${cacheDir})...`);
  sh('truncate', ['-s', `${size}M`, raw]);
  sh('mkfs.ext4', ['-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', '-d', SOURCE_DIR, raw]);
  sh('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, baseImage]);
  rmSync(raw);
}

const virtnbdbackup = spawnSync('virtnbdbackup', ['--version'], { encoding: 'utf8' });
const hasPeer = virtnbdbackup.status === 0;

ensureBaseImage();
const conn = await connectSystem();
const work = mkdtempSync(join(tmpdir(), 'lvb-bench-compress-'));
const ours = await createThrowawayDomain(conn, 'bench-cmp-ours', [{ sizeMiB: 16 }], { start: false });
const peer = hasPeer ? await createThrowawayDomain(conn, 'bench-cmp-peer', [{ sizeMiB: 16 }], { start: false }) : null;
try {
  for (const vm of [ours, peer]) {
    if (vm === null) continue;
    sh('cp', ['--sparse=always', baseImage, vm.disks[0]!.path]);
    await vm.domain.start();
  }
  await waitForSettledGuests([ours.name, ...(peer ? [peer.name] : [])]);
  const info = JSON.parse(sh('qemu-img', ['info', '--output=json', baseImage])) as { 'virtual-size': number; 'actual-size': number };
  const guestData = info['actual-size'];
  const times = { zstd: [] as number[], zlib: [] as number[], qemuImg: [] as number[], peer: [] as number[] };
  const sizes = { zstd: 0, zlib: 0, qemuImg: 0, peer: 0 };
  const loads: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    loads.push(loadavg()[0]!);
    for (const compress of ['zstd', 'zlib'] as const) {
      const dest = join(work, `ours-${compress}`);
      rmSync(dest, { recursive: true, force: true });
      const run = await timedAsync(() => runBackup({ domain: ours.name, dest, connection: conn, level: 'full', compress }));
      times[compress].push(run.seconds);
      sizes[compress] = storedBytes(join(dest, run.value.disks[0]!.file));
    }
    const converted = join(work, 'qemu-img.qcow2');
    rmSync(converted, { force: true });
    times.qemuImg.push(
      timed(() => sh('qemu-img', ['convert', '-c', '-f', 'qcow2', '-O', 'qcow2', '-o', 'compression_type=zstd', baseImage, converted])).seconds,
    );
    sizes.qemuImg = storedBytes(converted);
    if (peer !== null) {
      const peerDir = join(work, 'peer');
      rmSync(peerDir, { recursive: true, force: true });
      times.peer.push(timed(() => sh('virtnbdbackup', ['-U', 'qemu:///system', '-d', peer.name, '-l', 'full', '--compress', '-o', peerDir])).seconds);
      sizes.peer = storedBytes(peerDir);
    }
  }
  // Our zstd file reads as the source does.
  const oursZstd = join(work, 'ours-zstd');
  const zstdFile = join(
    oursZstd,
    sh('ls', [oursZstd])
      .split('\n')
      .find((name) => name.endsWith('.qcow2'))!,
  );
  const same = spawnSync('qemu-img', ['compare', '-U', zstdFile, baseImage], { encoding: 'utf8' }).status === 0;

  const ours3 = median(times.zstd);
  const qemu = median(times.qemuImg);
  console.log(
    `ext4 of ${SOURCE_DIR}: ${mib(info['virtual-size'])} disk, ${mib(guestData)} allocated; full backups, median of ${ROUNDS} round(s); load average ${loads.map((l) => l.toFixed(1)).join(', ')} on ${sh('nproc', []).trim()} cores`,
  );
  console.log('| what | time (s) | stored | of the data | vs qemu-img zstd: time | size |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
  const row = (label: string, seconds: number, bytes: number) =>
    console.log(
      `| ${label} | ${seconds.toFixed(2)} | ${mib(bytes)} | ${((bytes / guestData) * 100).toFixed(1)} % | ${(qemu / seconds).toFixed(2)}x faster | ${((bytes / sizes.qemuImg) * 100).toFixed(1)} % |`,
    );
  row('libvirt-backup --compress zstd', ours3, sizes.zstd);
  row('libvirt-backup --compress zlib', median(times.zlib), sizes.zlib);
  row('qemu-img convert -c -o compression_type=zstd (the image file)', qemu, sizes.qemuImg);
  if (peer !== null) row(`virtnbdbackup --compress (lz4, ${virtnbdbackup.stdout.trim()})`, median(times.peer), sizes.peer);
  else console.log('| virtnbdbackup --compress | not installed on this machine: not measured | | | | |');
  console.log(`apparent size of our zstd file: ${mib(statSync(zstdFile).size)} (the room its clusters saved is a hole)`);
  console.log(`our zstd backup ${same ? 'compares identical to' : 'DIFFERS from'} the source image (qemu-img compare)`);
  console.log(
    `rounds (s): zstd ${times.zstd.map((v) => v.toFixed(2)).join(', ')}; zlib ${times.zlib.map((v) => v.toFixed(2)).join(', ')}; qemu-img ${times.qemuImg.map((v) => v.toFixed(2)).join(', ')}${peer ? `; virtnbdbackup ${times.peer.map((v) => v.toFixed(2)).join(', ')}` : ''}`,
  );
  const sizeMet = sizes.zstd <= sizes.qemuImg * 1.05;
  const speedMet = qemu / ours3 >= 2;
  const peerLine =
    peer === null
      ? 'virtnbdbackup not installed'
      : `faster than virtnbdbackup --compress (${median(times.peer) > ours3 ? 'met' : 'MISSED'}) and smaller (${sizes.peer > sizes.zstd ? 'met' : 'MISSED'})`;
  console.log(
    `targets: zstd within 5 % of qemu-img's size (${sizeMet ? 'met' : 'MISSED'}), >= 2x faster than qemu-img (${speedMet ? 'met' : 'MISSED'}); ${peerLine}`,
  );
} finally {
  await ours.cleanup();
  await peer?.cleanup();
  rmSync(work, { recursive: true, force: true });
  await conn.close();
}
