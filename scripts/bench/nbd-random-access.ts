// Random access through the NBD client, part of the `nbd` suite: 16 reads of 2 MiB in
// flight at shuffled offsets covering a 1 GiB export of random data, once into caller
// buffers that are reused (`read(offset, length, { into })`) and once into fresh
// buffers (`read(offset, length)`), against `nbdcopy` of the same export to `null:`;
// then 16 writes of 2 MiB in flight into a writable export, of that file's data held in
// memory, against `nbdcopy` from the file to the same export (reading the file from the
// page cache is nbdcopy's extra work; in Node an async fs.read of 2 MiB pieces costs
// about as much CPU as the writes themselves, which would measure fs, not write()). Rounds alternate between the readers (and between
// the writers), medians are compared. Each of our measurements runs in a process of its
// own and is timed from connecting to closing, as nbdcopy's are (its process start included).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NbdClient } from '../../src/nbd/index.js';
import { median } from './measure.js';
import { clientCpuSeconds, processCpuSeconds, processMinorFaults, threadCpu } from './process-cpu.js';

const MiB = 1024 ** 2;
const EXPORT_SIZE = 1024 * MiB;
const PIECE = 2 * MiB;
const IN_FLIGHT = 16;
const TARGETS = { into: 0.9, fresh: 0.6, write: 0.8 } as const;
const here = fileURLToPath(import.meta.url);
/** Client options for experiments, as JSON (the sequential part reads it too). */
const tuning = JSON.parse(process.env.NBD_BENCH_CLIENT_OPTIONS ?? '{}') as Record<string, number>;

interface Timed {
  seconds: number;
  bytes: number;
  /** CPU of the whole process (all threads) and minor page faults, from connecting to closing. */
  cpuSeconds: number;
  pageFaults: number;
  /** CPU of the JS thread alone, which makes every socket read and runs every callback. */
  jsThreadSeconds: number;
  /** CPU the server spent meanwhile, and the page faults it took, when its pid was given. */
  serverCpuSeconds?: number;
  serverPageFaults?: number;
  /** The same reads again in the same process, once V8 has compiled the client's code. */
  warm?: Timed;
}

const jsThreadCpu = (): number => threadCpu('self').get(String(process.pid)) ?? Number.NaN;

/** Starts the clock; the function it returns stops it and says what was spent (by the server `serverPid` too). */
function clock(serverPid?: number): (bytes: number) => Timed {
  const started = performance.now();
  const usage = process.resourceUsage();
  const jsThread = jsThreadCpu();
  const server = serverPid === undefined ? 0 : processCpuSeconds(serverPid);
  const serverFaults = serverPid === undefined ? 0 : processMinorFaults(serverPid);
  return (bytes) => {
    const now = process.resourceUsage();
    return {
      seconds: (performance.now() - started) / 1000,
      bytes,
      cpuSeconds: (now.userCPUTime + now.systemCPUTime - usage.userCPUTime - usage.systemCPUTime) / 1e6,
      pageFaults: now.minorPageFault - usage.minorPageFault,
      jsThreadSeconds: jsThreadCpu() - jsThread,
      ...(serverPid === undefined
        ? {}
        : { serverCpuSeconds: processCpuSeconds(serverPid) - server, serverPageFaults: processMinorFaults(serverPid) - serverFaults }),
    };
  };
}

/** Offsets of every piece of the export, in random order. */
function shuffledOffsets(): number[] {
  const offsets = Array.from({ length: EXPORT_SIZE / PIECE }, (_, i) => i * PIECE);
  for (let i = offsets.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [offsets[i], offsets[j]] = [offsets[j]!, offsets[i]!];
  }
  return offsets;
}

/** Runs `work` on every offset with IN_FLIGHT workers; each worker has its own index. */
async function inFlight(offsets: number[], work: (offset: number, worker: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async (_, worker) => {
      while (next < offsets.length) await work(offsets[next++]!, worker);
    }),
  );
}

async function childRead(socket: string, into: boolean, serverPid: number): Promise<void> {
  // Caller buffers in use already: allocated and touched before the clock starts.
  // Buffer.alloc alone touches nothing: memory that large comes zeroed from mmap, and
  // the reads would pay its first touches.
  const buffers = into ? Array.from({ length: IN_FLIGHT }, () => Buffer.alloc(PIECE).fill(1)) : [];
  const readAll = async (): Promise<Timed> => {
    const offsets = shuffledOffsets();
    const stop = clock(serverPid);
    const client = await NbdClient.connect({ path: socket, ...tuning });
    let bytes = 0;
    await inFlight(offsets, async (offset, worker) => {
      const data = await client.read(offset, PIECE, into ? { into: buffers[worker]! } : {});
      bytes += data.length;
    });
    await client.close();
    return stop(bytes);
  };
  const cold = await readAll();
  process.stdout.write(JSON.stringify({ ...cold, warm: await readAll() }) + '\n');
}

async function childWrite(socket: string, source: string): Promise<void> {
  const offsets = shuffledOffsets().sort((a, b) => a - b);
  // The data is in memory already, as a caller's would be: write() is what is timed.
  const data = readFileSync(source);
  const stop = clock();
  const client = await NbdClient.connect({ path: socket, ...tuning });
  let bytes = 0;
  await inFlight(offsets, async (offset) => {
    const piece = data.subarray(offset, offset + PIECE);
    await client.write(offset, piece);
    bytes += piece.length;
  });
  await client.close();
  process.stdout.write(JSON.stringify(stop(bytes)) + '\n');
}

/**
 * CPU µs per page fault of fresh memory here, as the fresh reads use it: 1 GiB in 2 MiB
 * Buffers, 16 alive at a time, every page written once; allocation, first touch and
 * the release of what the collector frees are all in it.
 */
function childTouch(): void {
  const alive: Buffer[] = [];
  const stop = clock();
  for (let piece = 0; piece < EXPORT_SIZE / PIECE; piece++) {
    const memory = Buffer.allocUnsafe(PIECE);
    for (let at = 0; at < PIECE; at += 4096) memory[at] = 1;
    alive.push(memory);
    if (alive.length > IN_FLIGHT) alive.shift();
  }
  const { cpuSeconds, pageFaults } = stop(EXPORT_SIZE);
  process.stdout.write(JSON.stringify({ microsPerFault: (cpuSeconds * 1e6) / pageFaults, pageFaults }) + '\n');
}

function sh(command: string, args: string[]): void {
  const result = spawnSync(command, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed (${result.status ?? result.signal})`);
}

function makeRandomRaw(path: string): void {
  // AES-CTR over zeroes: incompressible and far quicker than /dev/urandom.
  sh('sh', ['-c', `openssl enc -aes-128-ctr -pass pass:nbd-random -nosalt -pbkdf2 < /dev/zero 2>/dev/null | head -c ${EXPORT_SIZE} > '${path}.tmp'`]);
  renameSync(`${path}.tmp`, path);
}

async function serve(socket: string, args: string[]): Promise<ChildProcess> {
  const server = spawn('qemu-nbd', ['--persistent', '--shared=8', '-k', socket, ...args], { stdio: 'ignore' });
  for (let i = 0; i < 400; i++) {
    if (server.exitCode !== null) throw new Error('qemu-nbd exited');
    const ok = await new Promise<boolean>((done) => {
      const probe = connect({ path: socket });
      probe.once('connect', () => (probe.destroy(), done(true)));
      probe.once('error', () => done(false));
    });
    if (ok) return server;
    await new Promise((r) => setTimeout(r, 25));
  }
  server.kill('SIGTERM');
  throw new Error('qemu-nbd did not start');
}

async function stop(server: ChildProcess): Promise<void> {
  server.kill('SIGTERM');
  await new Promise((r) => (server.exitCode !== null ? r(null) : server.once('exit', r)));
}

function timeProcess(command: string, args: string[]): Measured {
  const cpuBefore = clientCpuSeconds();
  const started = performance.now();
  const result = spawnSync(command, args, { encoding: 'utf8' });
  const seconds = (performance.now() - started) / 1000;
  if (result.status !== 0) throw new Error(`${command} failed: ${result.stderr}`);
  // The child is reaped: its CPU is counted with this process's children (and this
  // process's own few milliseconds of spawning it).
  return { seconds, cpuSeconds: clientCpuSeconds() - cpuBefore };
}

/** Runs this file with `args` in a process of its own; resolves with the JSON of its last line. */
function runChild<T>(args: string[]): T {
  const result = spawnSync(process.execPath, ['--import=tsx', here, ...args], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`${args[0]} failed: ${result.stderr}`);
  return JSON.parse(result.stdout.trim().split('\n').at(-1)!) as T;
}

function timeChild(args: string[]): Measured {
  const timed = runChild<Timed>(args);
  if (timed.bytes !== EXPORT_SIZE) throw new Error(`${args[0]} moved ${timed.bytes} bytes of ${EXPORT_SIZE}`);
  return timed;
}

interface Measured {
  seconds: number;
  cpuSeconds?: number;
  pageFaults?: number;
  jsThreadSeconds?: number;
  warm?: Measured;
  /** CPU the server (qemu-nbd) spent during the run. */
  serverCpuSeconds?: number;
  /** Page faults the server took during the run. */
  serverPageFaults?: number;
}

interface Contender {
  name: string;
  time: () => Measured;
  runs: Measured[];
}

/** `time` with the server's CPU and page faults during it added. */
function withServerCpu(server: ChildProcess, time: () => Measured): () => Measured {
  return () => {
    const before = processCpuSeconds(server.pid!);
    const faultsBefore = processMinorFaults(server.pid!);
    const measured = time();
    return { ...measured, serverCpuSeconds: processCpuSeconds(server.pid!) - before, serverPageFaults: processMinorFaults(server.pid!) - faultsBefore };
  };
}

/** Alternating rounds after one untimed pass of each; the first contender is the reference. */
function race(contenders: Contender[], rounds: number): { rows: string[]; ratios: number[]; runs: Measured[][] } {
  for (const contender of contenders) contender.time();
  for (let i = 0; i < rounds; i++) for (const contender of contenders) contender.runs.push(contender.time());
  const seconds = (c: Contender): number => median(c.runs.map((m) => m.seconds));
  const reference = seconds(contenders[0]!);
  const ratios = contenders.map((c) => reference / seconds(c));
  const rows = contenders.map((c, i) => {
    const cpu = c.runs[0]!.cpuSeconds === undefined ? 'n/a' : `${median(c.runs.map((m) => m.cpuSeconds!)).toFixed(2)} s`;
    const faults = c.runs[0]!.pageFaults === undefined ? 'n/a' : median(c.runs.map((m) => m.pageFaults!)).toFixed(0);
    const all = c.runs.map((m) => m.seconds.toFixed(3)).join(' ');
    return `| ${c.name} | ${seconds(c).toFixed(3)} s | ${all} | ${(EXPORT_SIZE / seconds(c) / MiB).toFixed(0)} | ${ratios[i]!.toFixed(2)} | ${cpu} | ${faults} |`;
  });
  return { rows, ratios, runs: contenders.map((c) => c.runs) };
}

/** The random-access part of the suite; images are cached in `cacheDir`, sockets and the write target go to `work`. */
export async function benchRandomAccess(cacheDir: string, work: string, rounds: number): Promise<string[]> {
  const source = join(cacheDir, 'random-1g.raw');
  if (!existsSync(source)) makeRandomRaw(source);
  const loadBefore = loadavg();
  const readSocket = join(work, 'random-read.sock');
  const reader = await serve(readSocket, ['--read-only', '-f', 'raw', source]);
  let reads;
  try {
    reads = race(
      [
        {
          name: 'nbdcopy → null:',
          time: withServerCpu(reader, () => timeProcess('nbdcopy', [`nbd+unix:///?socket=${readSocket}`, 'null:'])),
          runs: [],
        },
        {
          name: `ours, ${IN_FLIGHT} × read(2 MiB, { into }) at shuffled offsets`,
          time: () => timeChild(['--child-read', readSocket, 'into', String(reader.pid)]),
          runs: [],
        },
        {
          name: `ours, ${IN_FLIGHT} × read(2 MiB) (fresh buffers) at shuffled offsets`,
          time: () => timeChild(['--child-read', readSocket, 'fresh', String(reader.pid)]),
          runs: [],
        },
      ],
      rounds,
    );
  } finally {
    await stop(reader);
  }
  const target = join(work, 'write-target.raw');
  writeFileSync(target, '');
  sh('truncate', ['-s', String(EXPORT_SIZE), target]);
  const writeSocket = join(work, 'random-write.sock');
  const writer = await serve(writeSocket, ['-f', 'raw', target]);
  let writes;
  try {
    writes = race(
      [
        { name: 'nbdcopy file → export', time: () => timeProcess('nbdcopy', [source, `nbd+unix:///?socket=${writeSocket}`]), runs: [] },
        { name: `ours, ${IN_FLIGHT} × write(2 MiB) from memory, in order`, time: () => timeChild(['--child-write', writeSocket, source]), runs: [] },
      ],
      rounds,
    );
    // The last round was ours: the export must now hold the file.
    sh('cmp', ['--silent', source, target]);
  } finally {
    await stop(writer);
    rmSync(target, { force: true });
  }
  // What fresh Buffers cost that `into` does not: their first touches. Measured, not
  // assumed, in a process of its own (median of three).
  const touches = [0, 1, 2].map(() => runChild<{ microsPerFault: number }>(['--child-touch']).microsPerFault);
  const perFault = median(touches);
  const of = (runs: Measured[], key: 'seconds' | 'pageFaults' | 'cpuSeconds') => median(runs.map((m) => m[key] ?? Number.NaN));
  const extraFaults = of(reads.runs[2]!, 'pageFaults') - of(reads.runs[1]!, 'pageFaults');
  // A CPU second of the fresh reads took this much of their time: more than one when
  // other work shares the cores, so the faults' CPU stretches alike.
  const freshSeconds = of(reads.runs[2]!, 'seconds');
  const stretch = Math.max(1, freshSeconds / of(reads.runs[2]!, 'cpuSeconds'));
  const faultSeconds = (extraFaults * perFault * stretch) / 1e6;
  const withoutFaults = of(reads.runs[0]!, 'seconds') / (freshSeconds - faultSeconds);
  const loadAfter = loadavg();
  const met = (ratio: number, wanted: number): string => `${ratio.toFixed(2)}x ${ratio >= wanted ? 'met' : 'MISSED'}`;
  const budget = readCpuBudget(reads.runs);
  return [
    `| 1 GiB random, raw | median of ${rounds} | runs (s) | MiB/s | ratio vs nbdcopy | our CPU (all threads) | our page faults |`,
    '| --- | --- | --- | --- | --- | --- | --- |',
    ...reads.rows,
    ...writes.rows,
    '',
    `ratios: into ${reads.ratios[1]!.toFixed(2)}x, fresh ${reads.ratios[2]!.toFixed(2)}x, write ${writes.ratios[1]!.toFixed(2)}x nbdcopy`,
    `targets: into >= ${TARGETS.into}x ${met(reads.ratios[1]!, TARGETS.into)}; fresh >= ${TARGETS.fresh}x ${met(reads.ratios[2]!, TARGETS.fresh)}; write >= ${TARGETS.write}x ${met(writes.ratios[1]!, TARGETS.write)}`,
    `fresh Buffers take ${extraFaults.toFixed(0)} more page faults than \`into\`; a first touch of a fresh page costs ${perFault.toFixed(1)} µs of CPU here ` +
      `(${touches.map((t) => t.toFixed(1)).join(', ')}), so about ${faultSeconds.toFixed(2)} s of the fresh reads' time (their CPU stretched ${stretch.toFixed(2)}x into wall time) is the machine's price for fresh memory; without it they would read at ${withoutFaults.toFixed(2)}x`,
    ...budget,
    `load average (1/5/15 min) before: ${loadBefore.map((l) => l.toFixed(2)).join(' ')}, after: ${loadAfter.map((l) => l.toFixed(2)).join(' ')}`,
  ];
}

/**
 * Where the reads' time went: the CPU of client and server per read of the export, what
 * that allows on this machine's cores, and the reads again once V8 has compiled the client.
 */
function readCpuBudget(runs: Measured[][]): string[] {
  const of = (list: Measured[], key: 'seconds' | 'cpuSeconds' | 'serverCpuSeconds' | 'serverPageFaults' | 'jsThreadSeconds'): number =>
    median(list.map((m) => m[key] ?? Number.NaN));
  const [peer, into, fresh] = runs.map((list) => ({
    seconds: of(list, 'seconds'),
    client: of(list, 'cpuSeconds'),
    server: of(list, 'serverCpuSeconds'),
    serverFaults: of(list, 'serverPageFaults'),
    jsThread: of(list, 'jsThreadSeconds'),
    warm: list[0]!.warm === undefined ? undefined : list.map((m) => m.warm!),
  })) as [Budget, Budget, Budget];
  const cores = availableParallelism();
  const total = (b: Budget): number => b.client + b.server;
  // The share of the cores' time a run kept busy with client and server work.
  const used = (b: Budget): number => total(b) / (cores * b.seconds);
  const line = (name: string, b: Budget): string =>
    `${name} ${b.client.toFixed(2)} s${Number.isNaN(b.jsThread) ? '' : ` (JS thread ${b.jsThread.toFixed(2)})`} + qemu-nbd ${b.server.toFixed(2)} s (${b.serverFaults.toFixed(0)} page faults) = ${total(b).toFixed(2)} s, ${(used(b) * 100).toFixed(0)} % of ${cores} cores`;
  const moreOrLess = (seconds: number): string => `${Math.abs(seconds).toFixed(2)} s ${seconds < 0 ? 'less' : 'more'}`;
  const warmLine = (name: string, b: Budget): string => {
    const warm = b.warm!;
    const seconds = of(warm, 'seconds');
    return `${name} ${seconds.toFixed(3)} s (${(peer.seconds / seconds).toFixed(2)}x nbdcopy), client ${of(warm, 'cpuSeconds').toFixed(2)} s (JS thread ${of(warm, 'jsThreadSeconds').toFixed(2)}) + qemu-nbd ${of(warm, 'serverCpuSeconds').toFixed(2)} s`;
  };
  return [
    `CPU per read of the export (medians): ${line('nbdcopy', peer)}; ${line('ours into', into)}; ${line('ours fresh', fresh)}`,
    `at nbdcopy's use of the cores, CPU alone allows ours at most ${(total(peer) / total(into)).toFixed(2)}x (into) and ${(total(peer) / total(fresh)).toFixed(2)}x (fresh): ` +
      `on into, our client spends ${moreOrLess(into.client - peer.client)} than nbdcopy, the server ${moreOrLess(into.server - peer.server)}`,
    `the same reads again in the same process, once V8 has compiled the client: ${warmLine('into', into)}; ${warmLine('fresh', fresh)}`,
  ];
}

interface Budget {
  seconds: number;
  client: number;
  server: number;
  serverFaults: number;
  jsThread: number;
  warm: Measured[] | undefined;
}

if (process.argv[2] === '--child-read') {
  await childRead(process.argv[3]!, process.argv[4] === 'into', Number(process.argv[5]));
} else if (process.argv[2] === '--child-write') {
  await childWrite(process.argv[3]!, process.argv[4]!);
} else if (process.argv[2] === '--child-touch') {
  childTouch();
}
