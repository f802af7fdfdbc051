// End-to-end backup figures on one 2 GiB domain of random data, against
// virtnbdbackup/virtnbdrestore and nbdcopy measured in the same run:
// full backup, incremental after 32 MiB of writes, restore of the latest point.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

import { runBackup } from '../../src/backup/engine/engine.js';
import { BackupSet, restore } from '../../src/backup/index.js';
import { connectSystem, createThrowawayDomain, guestWrite, IMAGE_DIR } from '../../test/helpers/daemon.js';

const SIZE_GIB = Number(process.env.BENCH_BACKUP_GIB ?? 2);
const ROUNDS = Number(process.env.BENCH_BACKUP_ROUNDS ?? 3);
const cacheDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '.bench', 'backup');
const baseImage = join(cacheDir, `random-${SIZE_GIB}g.qcow2`);

function sh(command: string, args: string[]): string {
  return execFileSync(command, args, { encoding: 'utf8', maxBuffer: 64 * 2 ** 20, stdio: ['ignore', 'pipe', 'pipe'] });
}

// Each timed step starts with no dirty pages left by the previous one: the
// kernel's write-back of an earlier step would otherwise throttle the next.
function settle(): void {
  execFileSync('sync');
}

function timed<T>(fn: () => T): { value: T; seconds: number } {
  settle();
  const start = performance.now();
  const value = fn();
  return { value, seconds: (performance.now() - start) / 1000 };
}

async function timedAsync<T>(fn: () => Promise<T>): Promise<{ value: T; seconds: number }> {
  settle();
  const start = performance.now();
  const value = await fn();
  return { value, seconds: (performance.now() - start) / 1000 };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

function dirBytes(dir: string): number {
  return Number(sh('du', ['-sb', dir]).split(/\s/)[0]);
}

if (!existsSync(baseImage)) {
  mkdirSync(cacheDir, { recursive: true });
  const raw = `${baseImage}.raw`;
  console.log(`generating ${SIZE_GIB} GiB of random data (cached in ${cacheDir})...`);
  sh('sh', ['-c', `head -c ${SIZE_GIB}G /dev/urandom > '${raw}'`]);
  sh('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, baseImage]);
  rmSync(raw);
}

const conn = await connectSystem();
const work = mkdtempSync(join(tmpdir(), 'lvb-bench-backup-'));
const ours = await createThrowawayDomain(conn, 'bench-ours', [{ sizeMiB: 16 }], { start: false });
const peer = await createThrowawayDomain(conn, 'bench-peer', [{ sizeMiB: 16 }], { start: false });
try {
  for (const vm of [ours, peer]) {
    sh('cp', [baseImage, vm.disks[0]!.path]);
    await vm.domain.start();
  }

  // nbdcopy of the same export to a file: the speed limit for reading it. With
  // --flush it also makes the file durable, as every backup of ours is.
  const nbdcopyToFile = async (flush: boolean): Promise<number> => {
    const socket = join(work, 'export.sock');
    await ours.domain.backupBegin({
      mode: 'pull',
      server: { transport: 'unix', socket },
      disks: [{ name: 'vda', backup: 'yes', type: 'file', scratch: { file: join(IMAGE_DIR, `${ours.name}-scratch.qcow2`) } }],
    });
    try {
      return timed(() => sh('nbdcopy', [...(flush ? ['--flush'] : []), `nbd+unix:///vda?socket=${socket}`, join(work, 'nbdcopy.raw')])).seconds;
    } finally {
      await ours.domain.abortJob();
      await ours.domain.waitForJob({ timeoutMs: 60_000 });
      rmSync(join(work, 'nbdcopy.raw'), { force: true });
    }
  };

  // Full backups alternate with their peers round by round (medians reported): on
  // these shared machines one run alone says little.
  const dest = join(work, 'ours');
  const peerDir = join(work, 'peer');
  const times = { nbdcopy: [] as number[], nbdcopyFlush: [] as number[], ours: [] as number[], peer: [] as number[] };
  for (let round = 0; round < ROUNDS; round++) {
    if (round > 0) {
      // Each round starts from scratch: a new set, a new virtnbdbackup directory.
      rmSync(dest, { recursive: true });
      rmSync(peerDir, { recursive: true });
    }
    times.nbdcopy.push(await nbdcopyToFile(false));
    times.nbdcopyFlush.push(await nbdcopyToFile(true));
    times.ours.push((await timedAsync(() => runBackup({ domain: ours.name, dest, connection: conn, level: 'full' }))).seconds);
    times.peer.push(timed(() => sh('virtnbdbackup', ['-U', 'qemu:///system', '-d', peer.name, '-l', 'full', '-o', peerDir])).seconds);
  }
  const oursFull = median(times.ours);
  const peerFull = median(times.peer);
  const nbdcopyFile = median(times.nbdcopy);
  const nbdcopyFlush = median(times.nbdcopyFlush);

  // 32 MiB of guest writes, in four places.
  for (const vm of [ours, peer]) {
    for (const [i, offset] of ['16M', '700M', '1200M', '1900M'].entries()) await guestWrite(vm.domain, 0, 0x40 + i, offset, '8M');
  }
  const oursInc = await timedAsync(() => runBackup({ domain: ours.name, dest, connection: conn, level: 'inc' }));
  const peerInc = timed(() => sh('virtnbdbackup', ['-U', 'qemu:///system', '-d', peer.name, '-l', 'inc', '-o', peerDir]));

  const set = await BackupSet.open(dest);
  const restoreDir = join(work, 'restore-ours');
  mkdirSync(restoreDir);
  const oursRestore = await timedAsync(() => restore(set, { to: restoreDir, format: 'qcow2' }));
  const peerRestore = timed(() => sh('virtnbdrestore', ['-i', peerDir, '-o', join(work, 'restore-peer')]));

  const granularity = 64 * 1024;
  const dirtyBytes = 32 * 2 ** 20;
  const incRead = oursInc.value.disks[0]!.dataBytes;
  const gib = SIZE_GIB * 2 ** 30;
  const rate = (seconds: number) => `${(gib / seconds / 1e6).toFixed(0)} MB/s`;
  const list = (values: number[]) => values.map((v) => v.toFixed(2)).join(', ');
  console.log(`one ${SIZE_GIB} GiB qcow2 disk of random data; times in seconds; full backups: median of ${ROUNDS} alternating rounds`);
  console.log('| step | libvirt-backup | peer | peer time | ratio (peer / ours) |');
  console.log('| --- | ---: | --- | ---: | ---: |');
  console.log(
    `| full backup | ${oursFull.toFixed(2)} (${rate(oursFull)}) | virtnbdbackup -l full | ${peerFull.toFixed(2)} | ${(peerFull / oursFull).toFixed(2)}x |`,
  );
  console.log(`| full backup | ${oursFull.toFixed(2)} | nbdcopy export -> raw file | ${nbdcopyFile.toFixed(2)} | ${(nbdcopyFile / oursFull).toFixed(2)}x |`);
  console.log(
    `| full backup | ${oursFull.toFixed(2)} | nbdcopy --flush export -> raw file | ${nbdcopyFlush.toFixed(2)} | ${(nbdcopyFlush / oursFull).toFixed(2)}x |`,
  );
  console.log(
    `| incremental, 32 MiB written | ${oursInc.seconds.toFixed(2)} | virtnbdbackup -l inc | ${peerInc.seconds.toFixed(2)} | ${(peerInc.seconds / oursInc.seconds).toFixed(2)}x |`,
  );
  console.log(
    `| restore latest | ${oursRestore.seconds.toFixed(2)} | virtnbdrestore | ${peerRestore.seconds.toFixed(2)} | ${(peerRestore.seconds / oursRestore.seconds).toFixed(2)}x |`,
  );
  console.log(
    `rounds: ours ${list(times.ours)}; virtnbdbackup ${list(times.peer)}; nbdcopy ${list(times.nbdcopy)}; nbdcopy --flush ${list(times.nbdcopyFlush)}`,
  );
  console.log(`stored: ours ${(dirBytes(dest) / 2 ** 20).toFixed(0)} MiB, virtnbdbackup ${(dirBytes(peerDir) / 2 ** 20).toFixed(0)} MiB`);
  console.log(
    `incremental read ${incRead} bytes for ${dirtyBytes} dirty bytes (bitmap granularity ${granularity}): ${incRead <= Math.ceil(dirtyBytes / granularity) * granularity ? 'met' : 'MISSED'}`,
  );
  console.log(
    `targets: full >= 3x faster than virtnbdbackup (${peerFull / oursFull >= 3 ? 'met' : 'MISSED'}), full within 1.3x of nbdcopy-to-file (${oursFull / nbdcopyFile <= 1.3 ? 'met' : 'MISSED'}; of nbdcopy --flush: ${oursFull / nbdcopyFlush <= 1.3 ? 'met' : 'MISSED'})`,
  );
} finally {
  await ours.domain.abortJob().catch(() => undefined);
  await ours.cleanup();
  await peer.cleanup();
  rmSync(work, { recursive: true, force: true });
  await conn.close();
}
