// Full sequential read of an NBD export: our client against `nbdcopy ... null:`, on the
// same qemu-nbd export in the same run. Runs alternate (nbdcopy, ours with reused
// memory, ours keeping every chunk, nbdcopy, ...) so load from other processes on the
// machine hits all readers alike; medians are compared. Both readers skip the extents
// base:allocation reports as zero and read everything else, and both times include
// connecting. Images are cached in .bench/nbd (gitignored); NBD_BENCH_KEEP_IMAGES=0
// deletes them afterwards; NBD_BENCH_RUNS sets the runs per reader (default 5).
// Then random access (nbd-random-access.ts): reads of 2 MiB at shuffled offsets into
// caller buffers and into fresh ones, and writes of 2 MiB, against nbdcopy.
// NBD_BENCH_PARTS=sequential or =random runs one part only.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NbdClient } from '../../src/nbd/index.js';
import { benchRandomAccess } from './nbd-random-access.js';
import { median } from './measure.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const RUNS = Number(process.env.NBD_BENCH_RUNS ?? 5);
const PARTS = process.env.NBD_BENCH_PARTS ?? 'sequential,random';
const TARGET_RATIO = 0.9;
const TARGET_RSS_MIB = 200;
const here = fileURLToPath(import.meta.url);
const cacheDir = resolve(dirname(here), '../../.bench/nbd');

/** Our side of one measurement, alone in its process so its peak RSS is ours. */
async function childRead(socket: string, reuseMemory: boolean): Promise<void> {
  const faults = (): number => process.resourceUsage().minorPageFault;
  const started = performance.now();
  const faultsBefore = faults();
  const tuning = JSON.parse(process.env.NBD_BENCH_CLIENT_OPTIONS ?? '{}') as Record<string, number>;
  // Reading starts on the first connection while the others join, as a caller would.
  const client = await NbdClient.connect({ path: socket, ...tuning });
  const connected = performance.now();
  let bytes = 0;
  for await (const chunk of client.chunks({ reuseMemory })) bytes += chunk.length;
  const read = performance.now();
  await client.close();
  const closed = performance.now();
  const phases: Phases = { connectMs: connected - started, readMs: read - connected, closeMs: closed - read, pageFaults: faults() - faultsBefore };
  const seconds = (closed - started) / 1000;
  process.stdout.write(JSON.stringify({ bytes, seconds, maxRssKiB: process.resourceUsage().maxRSS, phases }) + '\n');
}

function sh(command: string, args: string[], input?: 'inherit'): void {
  const result = spawnSync(command, args, { stdio: ['ignore', input ?? 'ignore', 'inherit'] });
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed (${result.status ?? result.signal})`);
}

function makeRandomImage(path: string): void {
  const raw = `${path}.raw`;
  // AES-CTR over zeroes: incompressible and far quicker than /dev/urandom.
  sh('sh', ['-c', `openssl enc -aes-128-ctr -pass pass:nbd-bench -nosalt -pbkdf2 < /dev/zero 2>/dev/null | head -c ${2 * GiB} > '${raw}'`]);
  sh('qemu-img', ['convert', '-O', 'qcow2', raw, `${path}.tmp`]);
  rmSync(raw);
  renameSync(`${path}.tmp`, path);
}

function makeSparseImage(path: string): void {
  const tmp = `${path}.tmp`;
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', tmp, String(8 * GiB)]);
  // 64 MiB of data in 16 runs spread over the disk.
  const writes = Array.from({ length: 16 }, (_, i) => ['-c', `write -P ${i + 1} ${i * 512 * MiB + 4096 * i} 4M`]).flat();
  sh('qemu-io', ['-f', 'qcow2', ...writes, tmp]);
  renameSync(tmp, path);
}

async function waitForSocket(path: string, server: ChildProcess): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (server.exitCode !== null) throw new Error('qemu-nbd exited');
    const ok = await new Promise<boolean>((done) => {
      const socket = connect({ path });
      socket.once('connect', () => (socket.destroy(), done(true)));
      socket.once('error', () => done(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error('qemu-nbd did not start');
}

interface Phases {
  connectMs: number;
  readMs: number;
  closeMs: number;
  /** Minor page faults from connect to close: first touches of fresh memory. */
  pageFaults: number;
}

interface Measure {
  seconds: number;
  maxRssKiB: number | undefined;
  phases?: Phases;
}

/** nbdcopy's peak RSS, from an untimed run under GNU time (undefined without it). */
function nbdcopyPeakRssKiB(socket: string): number | undefined {
  if (!existsSync('/usr/bin/time')) return undefined;
  const result = spawnSync('/usr/bin/time', ['-f', '%M', 'nbdcopy', `nbd+unix:///?socket=${socket}`, 'null:'], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`nbdcopy failed: ${result.stderr}`);
  const rss = Number(result.stderr.trim().split('\n').at(-1));
  return Number.isFinite(rss) ? rss : undefined;
}

// Timed without a wrapper: GNU time's own fork and exec would count against nbdcopy.
function timeNbdcopy(socket: string, maxRssKiB: number | undefined): Measure {
  const started = performance.now();
  const result = spawnSync('nbdcopy', [`nbd+unix:///?socket=${socket}`, 'null:'], { encoding: 'utf8' });
  const seconds = (performance.now() - started) / 1000;
  if (result.status !== 0) throw new Error(`nbdcopy failed: ${result.stderr}`);
  return { seconds, maxRssKiB };
}

function timeOurs(socket: string, size: number, reuseMemory: boolean): Measure {
  const args = ['--import=tsx', here, '--child', socket, reuseMemory ? 'reuse' : 'keep'];
  const result = spawnSync(process.execPath, args, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`client read failed: ${result.stderr}`);
  const measured = JSON.parse(result.stdout.trim().split('\n').at(-1)!) as Measure & { bytes: number };
  if (measured.bytes !== size) throw new Error(`client read ${measured.bytes} bytes of ${size}`);
  return measured;
}

async function benchImage(label: string, image: string, work: string): Promise<{ rows: string[]; phases: string }> {
  const socket = join(work, `${label.replace(/\W+/g, '-')}.sock`);
  const server = spawn('qemu-nbd', ['--read-only', '--persistent', '--shared=8', '-k', socket, '-f', 'qcow2', image], {
    stdio: 'ignore',
  });
  try {
    await waitForSocket(socket, server);
    const probe = await NbdClient.connect({ path: socket, connections: 1 });
    const size = probe.size;
    const multiConn = probe.canMultiConn;
    await probe.close();
    // One untimed pass of each warms the page cache and the server.
    const nbdcopyRss = nbdcopyPeakRssKiB(socket);
    timeOurs(socket, size, true);
    timeOurs(socket, size, false);
    const readers = [
      { name: 'nbdcopy → null:', time: () => timeNbdcopy(socket, nbdcopyRss), runs: [] as Measure[] },
      { name: `ours, chunks({ reuseMemory: true })`, time: () => timeOurs(socket, size, true), runs: [] as Measure[] },
      { name: `ours, chunks() (keeps every chunk)`, time: () => timeOurs(socket, size, false), runs: [] as Measure[] },
    ];
    for (let i = 0; i < RUNS; i++) {
      for (const reader of readers) reader.runs.push(reader.time());
    }
    const reference = median(readers[0]!.runs.map((m) => m.seconds));
    const rate = (seconds: number): string => (size / seconds / 1e6).toFixed(0);
    const peakMiB = (values: Measure[]): number | undefined => {
      const known = values.map((m) => m.maxRssKiB).filter((v): v is number => v !== undefined);
      return known.length ? Math.max(...known) / 1024 : undefined;
    };
    const rows = readers.map((reader, index) => {
      const seconds = median(reader.runs.map((m) => m.seconds));
      const ratio = reference / seconds;
      const peak = peakMiB(reader.runs);
      const all = reader.runs.map((m) => m.seconds.toFixed(3)).join(' ');
      const met = index === 0 ? '' : ratio >= TARGET_RATIO && peak !== undefined && peak < TARGET_RSS_MIB ? 'yes' : 'no';
      const name = index === 0 ? reader.name : `${reader.name}${multiConn ? ', multi-conn' : ''}`;
      return `| ${label} | ${name} | ${seconds.toFixed(3)} s | ${all} | ${rate(seconds)} | ${ratio.toFixed(2)} | ${
        peak === undefined ? 'n/a' : `${peak.toFixed(0)} MiB`
      } | ${met} |`;
    });
    const timed = readers[1]!.runs.map((m) => m.phases!);
    const phase = (key: keyof Phases): string => median(timed.map((p) => p[key])).toFixed(key === 'pageFaults' ? 0 : 1);
    const phases = `${label}, ours with reuseMemory (medians): connect ${phase('connectMs')} ms, read ${phase('readMs')} ms, close ${phase('closeMs')} ms, ${phase('pageFaults')} page faults`;
    return { rows, phases };
  } finally {
    server.kill('SIGTERM');
    await new Promise((r) => (server.exitCode !== null ? r(null) : server.once('exit', r)));
  }
}

async function main(): Promise<void> {
  mkdirSync(cacheDir, { recursive: true });
  const work = mkdtempSync(join(tmpdir(), 'nbd-bench-'));
  try {
    if (PARTS.includes('sequential')) await benchSequential(work);
    if (PARTS.includes('random')) {
      console.log('\nRandom access, 1 GiB export of random data (raw, qemu-nbd):\n');
      console.log((await benchRandomAccess(cacheDir, work, RUNS)).join('\n'));
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
    if (process.env.NBD_BENCH_KEEP_IMAGES === '0') rmSync(cacheDir, { recursive: true, force: true });
  }
}

async function benchSequential(work: string): Promise<void> {
  const randomImage = join(cacheDir, 'random-2g.qcow2');
  const sparseImage = join(cacheDir, 'sparse-8g.qcow2');
  if (!existsSync(randomImage)) {
    console.log('generating a 2 GiB qcow2 of random data (cached in .bench/nbd)...');
    makeRandomImage(randomImage);
  }
  if (!existsSync(sparseImage)) makeSparseImage(sparseImage);
  const results = [await benchImage('2 GiB random', randomImage, work), await benchImage('8 GiB sparse', sparseImage, work)];
  const rows = [
    `| export | reader | median of ${RUNS} | runs (s) | MB/s | ratio vs nbdcopy | peak RSS | target met |`,
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
    ...results.flatMap((result) => result.rows),
  ];
  console.log(rows.join('\n'));
  console.log('');
  for (const result of results) console.log(result.phases);
  console.log("\nTimes include connecting; ours exclude Node start-up, nbdcopy's include its process start (nbdcopy's peak RSS is from one untimed run).");
  console.log(`Target: ratio >= ${TARGET_RATIO.toFixed(2)} and peak RSS < ${TARGET_RSS_MIB} MiB (peak: the largest of the runs).`);
}

if (process.argv[2] === '--child') {
  await childRead(process.argv[3]!, process.argv[4] === 'reuse');
} else {
  await main();
}
