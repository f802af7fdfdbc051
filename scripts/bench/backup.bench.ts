// End-to-end backup figures on one 2 GiB domain of random data, against
// virtnbdbackup/virtnbdrestore and nbdcopy measured in the same run:
// full backup, incremental after 32 MiB of writes, restore of the latest point (to raw
// and qcow2, against virtnbdrestore and qemu-img convert of the same chain), then idle
// incrementals until the chain is 30 long.
import { closeSync, existsSync, fsyncSync, mkdirSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { runBackup } from '../../src/backup/engine/engine.js';
import { BackupSet, restore } from '../../src/backup/index.js';
import { connectSystem, createThrowawayDomain, guestWrite, IMAGE_DIR } from '../../test/helpers/daemon.js';
import { waitForSettledGuests } from './settled-guests.js';
import { median, sh, timed, timedAsync } from './measure.js';

const SIZE_GIB = Number(process.env.BENCH_BACKUP_GIB ?? 2);
const ROUNDS = Number(process.env.BENCH_BACKUP_ROUNDS ?? 3);
const CHAIN_LENGTH = Number(process.env.BENCH_CHAIN_LENGTH ?? 30);
const cacheDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '.bench', 'backup');
const baseImage = join(cacheDir, `random-${SIZE_GIB}g.qcow2`);
const loadAtStart = loadavg()
  .map((l) => l.toFixed(2))
  .join(' ');

/** Makes a file's data durable, as our restore does before it reports success. */
function fsyncPath(path: string): void {
  const fd = openSync(path, 'r+');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

const RESTORE_STEPS = ['ours raw', 'ours qcow2', 'qemu-img qcow2', 'qemu-img raw', 'virtnbdrestore'] as const;
type RestoreStep = (typeof RESTORE_STEPS)[number];

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
  await waitForSettledGuests([ours.name, peer.name]);

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
  // Where our full backups' time went: before the first data was written (domain and
  // disks looked up, checkpoint and job started, export connected), the copy, and after
  // the disk was done (job ended, manifest written and synced). nbdcopy's time starts
  // with the job already running and ends before it is stopped.
  const phases = { before: [] as number[], copy: [] as number[], after: [] as number[] };
  const phasedBackup = async (): Promise<number> => {
    let firstData = 0;
    let diskDone = 0;
    const started = performance.now();
    await runBackup({
      domain: ours.name,
      dest,
      connection: conn,
      level: 'full',
      onEvent: (event) => {
        if (event.type === 'progress' && firstData === 0) firstData = performance.now();
        if (event.type === 'disk-done') diskDone = performance.now();
      },
    });
    const ended = performance.now();
    phases.before.push((firstData - started) / 1000);
    phases.copy.push((diskDone - firstData) / 1000);
    phases.after.push((ended - diskDone) / 1000);
    return (ended - started) / 1000;
  };
  for (let round = 0; round < ROUNDS; round++) {
    if (round > 0) {
      // Each round starts from scratch: a new set, a new virtnbdbackup directory.
      rmSync(dest, { recursive: true });
      rmSync(peerDir, { recursive: true });
    }
    times.nbdcopy.push(await nbdcopyToFile(false));
    times.nbdcopyFlush.push(await nbdcopyToFile(true));
    times.ours.push(await phasedBackup());
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

  // Restores of the latest point alternate round by round: ours to raw and to qcow2,
  // qemu-img convert of the same chain (plus an fsync: our restore makes its output
  // durable before it reports success), and virtnbdrestore of its own chain. Every
  // chain is read once before each step, so all of them start from the page cache,
  // as the full backups read their source from it.
  const set = await BackupSet.open(dest);
  const chain = set.chainFor('vda').map((link) => link.path);
  const top = chain.at(-1)!;
  await set.close();
  const warm = (paths: string[]) => sh('sh', ['-c', 'cat "$@" > /dev/null', 'warm', ...paths]);
  const peerFiles = sh('find', [peerDir, '-type', 'f']).split('\n').filter(Boolean);
  const restoreTimes: Record<RestoreStep, number[]> = { 'ours raw': [], 'ours qcow2': [], 'qemu-img qcow2': [], 'qemu-img raw': [], virtnbdrestore: [] };
  const restoreDir = join(work, 'restore');
  for (let round = 0; round < ROUNDS; round++) {
    for (const step of RESTORE_STEPS) {
      rmSync(restoreDir, { recursive: true, force: true });
      mkdirSync(restoreDir);
      warm(step === 'virtnbdrestore' ? peerFiles : chain);
      const output = join(restoreDir, `vda.${step.endsWith('raw') ? 'raw' : 'qcow2'}`);
      let seconds: number;
      if (step === 'ours raw' || step === 'ours qcow2') {
        const format = step === 'ours raw' ? 'raw' : 'qcow2';
        const restoreSet = await BackupSet.open(dest);
        try {
          seconds = (await timedAsync(() => restore(restoreSet, { to: output, format }))).seconds;
        } finally {
          await restoreSet.close();
        }
      } else if (step === 'qemu-img qcow2' || step === 'qemu-img raw') {
        const format = step === 'qemu-img raw' ? 'raw' : 'qcow2';
        seconds = timed(() => {
          sh('qemu-img', ['convert', '-f', 'qcow2', '-O', format, top, output]);
          fsyncPath(output);
        }).seconds;
      } else {
        seconds = timed(() => sh('virtnbdrestore', ['-i', peerDir, '-o', join(restoreDir, 'peer')])).seconds;
      }
      restoreTimes[step].push(seconds);
    }
  }
  rmSync(restoreDir, { recursive: true, force: true });

  // Incrementals of the idle guest until the chain is CHAIN_LENGTH long: what a nightly
  // run of a quiet VM costs, where the fixed costs are all there is, early and late in a chain.
  const chainIncrementals: number[] = [];
  while (chain.length + chainIncrementals.length < CHAIN_LENGTH) {
    chainIncrementals.push((await timedAsync(() => runBackup({ domain: ours.name, dest, connection: conn, level: 'inc' }))).seconds);
  }
  const restoreMedian = Object.fromEntries(RESTORE_STEPS.map((step) => [step, median(restoreTimes[step])])) as Record<RestoreStep, number>;

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
  for (const format of ['raw', 'qcow2'] as const) {
    const ours = restoreMedian[`ours ${format}`];
    const peerRestore = restoreMedian.virtnbdrestore;
    console.log(
      `| restore latest to ${format} | ${ours.toFixed(2)} (${rate(ours)}) | virtnbdrestore | ${peerRestore.toFixed(2)} | ${(peerRestore / ours).toFixed(2)}x |`,
    );
    for (const theirs of ['qcow2', 'raw'] as const) {
      const qemuImg = restoreMedian[`qemu-img ${theirs}`];
      console.log(
        `| restore latest to ${format} | ${ours.toFixed(2)} | qemu-img convert -O ${theirs} + fsync | ${qemuImg.toFixed(2)} | ${(qemuImg / ours).toFixed(2)}x |`,
      );
    }
  }
  console.log(
    `rounds: ours ${list(times.ours)}; virtnbdbackup ${list(times.peer)}; nbdcopy ${list(times.nbdcopy)}; nbdcopy --flush ${list(times.nbdcopyFlush)}`,
  );
  const copy = median(phases.copy);
  console.log(
    `our full backups: ${median(phases.before).toFixed(2)} s before the first data (job, checkpoint, export), the copy ${copy.toFixed(2)} s, ` +
      `${median(phases.after).toFixed(2)} s after the last (job ended, manifest synced); medians of ${list(phases.before)} / ${list(phases.copy)} / ${list(phases.after)}; ` +
      `the copy alone at ${(nbdcopyFlush / copy).toFixed(2)}x nbdcopy --flush, which starts with the job running and ends before it stops`,
  );
  console.log(`restore rounds: ${RESTORE_STEPS.map((step) => `${step} ${list(restoreTimes[step])}`).join('; ')}`);
  console.log(
    `throughput: full backup ${rate(oursFull)}; restore to raw ${rate(restoreMedian['ours raw'])} (${(oursFull / restoreMedian['ours raw']).toFixed(2)}x the full backup's), to qcow2 ${rate(restoreMedian['ours qcow2'])} (${(oursFull / restoreMedian['ours qcow2']).toFixed(2)}x)`,
  );
  const early = chainIncrementals.slice(0, 3);
  const late = chainIncrementals.slice(-3);
  console.log(
    `idle incrementals as the chain grows: ${median(early).toFixed(2)} s at chain length ${chain.length + 1}-${chain.length + early.length}, ` +
      `${median(late).toFixed(2)} s at ${CHAIN_LENGTH - late.length + 1}-${CHAIN_LENGTH} (medians of ${list(early)} / ${list(late)})`,
  );
  console.log(`stored: ours ${(dirBytes(dest) / 2 ** 20).toFixed(0)} MiB, virtnbdbackup ${(dirBytes(peerDir) / 2 ** 20).toFixed(0)} MiB`);
  console.log(
    `incremental read ${incRead} bytes for ${dirtyBytes} dirty bytes (bitmap granularity ${granularity}): ${incRead <= Math.ceil(dirtyBytes / granularity) * granularity ? 'met' : 'MISSED'}`,
  );
  const met = (ok: boolean) => (ok ? 'met' : 'MISSED');
  const restoreTargets = (['raw', 'qcow2'] as const).map((format) => {
    const ours = restoreMedian[`ours ${format}`];
    return (
      `restore to ${format} >= 0.8x the full backup's throughput (${(oursFull / ours).toFixed(2)}x: ${met(oursFull / ours >= 0.8)}), ` +
      `>= 3x virtnbdrestore (${(restoreMedian.virtnbdrestore / ours).toFixed(2)}x: ${met(restoreMedian.virtnbdrestore / ours >= 3)}), ` +
      `>= 1.3x qemu-img convert -O qcow2 (${(restoreMedian['qemu-img qcow2'] / ours).toFixed(2)}x: ${met(restoreMedian['qemu-img qcow2'] / ours >= 1.3)})`
    );
  });
  console.log(
    `targets: full >= 3x faster than virtnbdbackup (${met(peerFull / oursFull >= 3)}), full within 1.3x of nbdcopy-to-file (${met(oursFull / nbdcopyFile <= 1.3)}), ` +
      `full >= 1.0x nbdcopy --flush (${(nbdcopyFlush / oursFull).toFixed(2)}x: ${met(nbdcopyFlush / oursFull >= 1.0)}); ${restoreTargets.join('; ')}`,
  );
  console.log(
    `load average: ${loadAtStart} at the start, ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')} at the end`,
  );
} finally {
  await ours.domain.abortJob().catch(() => undefined);
  await ours.cleanup();
  await peer.cleanup();
  rmSync(work, { recursive: true, force: true });
  await conn.close();
}
