// A full backup of one 2 GiB disk of random data read the remote way (qemu+tls to libvirtd,
// the NBD export over TLS on 127.0.0.1) against the same backup over the local unix
// socket, and against virtnbdbackup's own remote mode, in the same run, rounds
// alternating. virtnbdbackup takes the remote path only for a daemon whose host name
// differs from its own: it runs in a UTS namespace with another host name (and, like a
// backup server elsewhere, in a mount namespace that hides this host's libvirt files),
// reaching libvirtd over TLS, the export over TLS and the host over SSH as it requires.
// Needs the remote test rig of scripts/setup-host.sh.
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { runBackup } from '../../src/backup/engine/engine.js';
import { tlsRelay } from '../../src/backup/engine/tls-relay.js';
import { NbdClient } from '../../src/nbd/index.js';
import type { Domain } from '../../src/index.js';
import { connectSystem, createThrowawayDomain } from '../../test/helpers/daemon.js';
import { runHidden } from '../../test/helpers/hiding-namespace.js';
import { REMOTE_URIS } from '../../test/helpers/remote-rig.js';
import { waitForSettledGuests } from './settled-guests.js';
import { busiestThread, busyShare, machineTicks, threadCpu } from './process-cpu.js';
import { median, sh } from './measure.js';

// ca-cert.pem, client-cert.pem and client-key.pem, as libnbd's tls-certificates wants them.
const QEMU_CLIENT_PKI = '/etc/pki/qemu';
const QEMU_CLIENT_IDENTITY = {
  ca: readFileSync(join(QEMU_CLIENT_PKI, 'ca-cert.pem')),
  cert: readFileSync(join(QEMU_CLIENT_PKI, 'client-cert.pem')),
  key: readFileSync(join(QEMU_CLIENT_PKI, 'client-key.pem')),
};
const SIZE_GIB = Number(process.env.BENCH_BACKUP_GIB ?? 2);
const ROUNDS = Number(process.env.BENCH_REMOTE_ROUNDS ?? 3);
const benchDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '.bench');
const cacheDir = join(benchDir, 'backup');
const baseImage = join(cacheDir, `random-${SIZE_GIB}g.qcow2`);

async function timed(fn: () => Promise<unknown>): Promise<number> {
  // No dirty pages of the previous step left to throttle this one.
  execFileSync('sync');
  const start = performance.now();
  await fn();
  return (performance.now() - start) / 1000;
}

/** Where the CPU of one backup went: each process's total and its busiest thread. */
interface CpuSplit {
  qemuTotal: number;
  qemuBusiest: number;
  oursTotal: number;
  oursBusiest: number;
  /** Share of the machine's cores busy meanwhile, with anyone's work. */
  busy: number;
}

/** Runs `fn` and says how much CPU QEMU (`qemuPid`) and this process spent on it. */
async function cpuDuring(qemuPid: number, fn: () => Promise<unknown>): Promise<{ seconds: number; cpu: CpuSplit }> {
  const qemuBefore = threadCpu(qemuPid);
  const oursBefore = threadCpu('self');
  const usage = process.resourceUsage();
  const machineBefore = machineTicks();
  const seconds = await timed(fn);
  const machine = machineTicks();
  const after = process.resourceUsage();
  const qemuNow = threadCpu(qemuPid);
  const qemuTotal = [...qemuNow].reduce((sum, [tid, cpu]) => sum + cpu - (qemuBefore.get(tid) ?? 0), 0);
  return {
    seconds,
    cpu: {
      qemuTotal,
      qemuBusiest: busiestThread(qemuBefore, qemuNow),
      oursTotal: (after.userCPUTime + after.systemCPUTime - usage.userCPUTime - usage.systemCPUTime) / 1e6,
      // The relay's threads end with each run: the busiest thread that is left is the JS thread.
      oursBusiest: busiestThread(oursBefore, threadCpu('self')),
      busy: busyShare(machineBefore, machine),
    },
  };
}

/** virtnbdbackup's remote mode: another host name, this host's libvirt files hidden. */
async function peerBackup(domain: string, output: string): Promise<void> {
  const run = await runHidden([
    'unshare',
    '--uts',
    'sh',
    '-c',
    'hostname backup-server && exec "$@"',
    'sh',
    'virtnbdbackup',
    '-U',
    REMOTE_URIS.tls,
    '--tls',
    // It insists on a user and password for any URI but ssh; TLS without SASL asks for neither.
    '--user',
    'root',
    '--password',
    'unused',
    '--nbd-ip',
    '127.0.0.1',
    '-d',
    domain,
    '-l',
    'full',
    '-o',
    output,
  ]);
  if (run.code !== 0 || !/Connected to remote host/.test(run.stderr)) {
    throw new Error(`virtnbdbackup did not back up ${domain} in its remote mode (exit ${run.code}): ${run.stderr.slice(-2000)}`);
  }
}

/** Milliseconds our client takes to connect to a TLS export (TCP, handshake, negotiation) and to get one block-status answer. */
interface ExportLatency {
  connectMs: number[];
  blockStatusMs: number[];
}

async function exportLatency(port: number, latency: ExportLatency): Promise<void> {
  const tls = { ...QEMU_CLIENT_IDENTITY, relay: tlsRelay };
  for (let i = 0; i < 5; i++) {
    const start = performance.now();
    const client = await NbdClient.connect({ host: '127.0.0.1', port, exportName: 'vda', tls, connections: 1 });
    const connected = performance.now();
    for await (const extent of client.extents('base:allocation', { offset: 0, length: 64 * 2 ** 20 })) void extent;
    latency.blockStatusMs.push(performance.now() - connected);
    latency.connectMs.push(connected - start);
    await client.close();
  }
}

/**
 * Measures the remote job's own export (TCP, TLS, the client certificates of the rig's
 * QEMU layout) while a backup run holds the job open: returns how long libnbd's nbdcopy
 * takes to read the disk and throw it away (the speed limit for reading that export on
 * this machine, whatever the client), and adds our client's connect and block-status
 * times to `latency`. The backup run then goes on; its time is not counted.
 */
async function probeRemoteExport(domain: Domain, dest: string, latency: ExportLatency): Promise<number> {
  let seconds = 0;
  await runBackup({
    domain: domain.name,
    dest,
    uri: REMOTE_URIS.tls,
    level: 'full',
    hooks: {
      afterJobStart: async () => {
        const spec = await domain.backupGetSpec();
        if (spec.mode !== 'pull' || spec.server.transport !== 'tcp' || spec.server.tls !== 'yes')
          throw new Error('the remote job has no NBD server on TCP with TLS');
        const uri = `nbds://127.0.0.1:${spec.server.port}/vda?tls-certificates=${QEMU_CLIENT_PKI}`;
        execFileSync('sync');
        const start = performance.now();
        await promisify(execFile)('nbdcopy', [uri, 'null:']);
        seconds = (performance.now() - start) / 1000;
        await exportLatency(spec.server.port!, latency);
      },
    },
  });
  return seconds;
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
// Outside every path the namespace hides, so that virtnbdbackup can write there too.
mkdirSync(benchDir, { recursive: true });
const work = mkdtempSync(join(benchDir, 'remote-'));
const ours = await createThrowawayDomain(conn, 'bench-remote', [{ sizeMiB: 16 }], { start: false });
const peer = await createThrowawayDomain(conn, 'bench-remote-peer', [{ sizeMiB: 16 }], { start: false });
try {
  for (const vm of [ours, peer]) {
    sh('cp', [baseImage, vm.disks[0]!.path]);
    await vm.domain.start();
  }
  await waitForSettledGuests([ours.name, peer.name]);
  const qemuPid = Number(readFileSync(`/run/libvirt/qemu/${ours.name}.pid`, 'utf8'));
  const times = { local: [] as number[], remote: [] as number[], peer: [] as number[], nbdcopy: [] as number[] };
  const cpu = { local: [] as CpuSplit[], remote: [] as CpuSplit[] };
  const latency: ExportLatency = { connectMs: [], blockStatusMs: [] };
  for (let round = 0; round < ROUNDS; round++) {
    for (const name of ['local', 'remote', 'peer', 'nbdcopy']) rmSync(join(work, name), { recursive: true, force: true });
    const local = await cpuDuring(qemuPid, () => runBackup({ domain: ours.name, dest: join(work, 'local'), connection: conn, level: 'full' }));
    times.local.push(local.seconds);
    cpu.local.push(local.cpu);
    const remote = await cpuDuring(qemuPid, () => runBackup({ domain: ours.name, dest: join(work, 'remote'), uri: REMOTE_URIS.tls, level: 'full' }));
    times.remote.push(remote.seconds);
    cpu.remote.push(remote.cpu);
    times.peer.push(await timed(() => peerBackup(peer.name, join(work, 'peer'))));
    times.nbdcopy.push(await probeRemoteExport(ours.domain, join(work, 'nbdcopy'), latency));
  }
  const local = median(times.local);
  const remote = median(times.remote);
  const peerTime = median(times.peer);
  const nbdcopy = median(times.nbdcopy);
  const gib = SIZE_GIB * 2 ** 30;
  const rate = (seconds: number) => `${(gib / seconds / 1e6).toFixed(0)} MB/s`;
  const list = (values: number[]) => values.map((v) => v.toFixed(2)).join(', ');
  console.log(`one ${SIZE_GIB} GiB qcow2 disk of random data, full backups; times in seconds, medians of ${ROUNDS} alternating rounds`);
  console.log('| what | time | throughput |');
  console.log('| --- | ---: | ---: |');
  console.log(`| libvirt-backup, qemu:///system, NBD on a unix socket | ${local.toFixed(2)} | ${rate(local)} |`);
  console.log(`| libvirt-backup, qemu+tls://127.0.0.1, NBD over TLS | ${remote.toFixed(2)} | ${rate(remote)} |`);
  console.log(`| virtnbdbackup -U qemu+tls://127.0.0.1 --tls (remote mode) | ${peerTime.toFixed(2)} | ${rate(peerTime)} |`);
  console.log(`| nbdcopy of the same remote job's export (TLS) to null: (reads only) | ${nbdcopy.toFixed(2)} | ${rate(nbdcopy)} |`);
  console.log(`remote / local throughput: ${(local / remote).toFixed(2)}x (target >= 0.7x)`);
  // No client reads the TLS export faster than nbdcopy: if it alone takes longer than the
  // target allows, the target is out of reach for any client on this machine.
  console.log(
    `reading the TLS export alone (nbdcopy to null:) reaches ${(local / nbdcopy).toFixed(2)}x of the local backup; libvirt-backup's whole remote backup is ${(nbdcopy / remote).toFixed(2)}x nbdcopy's read`,
  );
  console.log(`libvirt-backup remote / virtnbdbackup remote throughput: ${(peerTime / remote).toFixed(2)}x (target >= 3x)`);
  // What every disk of every run pays before and between its reads, over TLS.
  console.log(
    `NBD over TLS to the job's export, medians of ${latency.connectMs.length}: connecting (TCP, TLS handshake, negotiation) ${median(latency.connectMs).toFixed(1)} ms, one block-status query ${median(latency.blockStatusMs).toFixed(1)} ms`,
  );
  console.log(`rounds: local ${list(times.local)}; remote ${list(times.remote)}; virtnbdbackup ${list(times.peer)}; nbdcopy ${list(times.nbdcopy)}`);
  // Where the time goes: QEMU's NBD server encrypts on one thread, the bound of the remote case.
  for (const kind of ['local', 'remote'] as const) {
    const of = (field: keyof CpuSplit) => median(cpu[kind].map((split) => split[field])).toFixed(2);
    console.log(
      `cpu (${kind}, s, medians): QEMU ${of('qemuTotal')} (busiest thread ${of('qemuBusiest')}), libvirt-backup ${of('oursTotal')} (JS thread ${of('oursBusiest')})`,
    );
  }
  // Both ends share these cores: QEMU encrypts what the client decrypts. At 0.7x, the CPU
  // the remote backup took against what the cores could give it in that time.
  const cores = availableParallelism();
  const total = (kind: 'local' | 'remote') => median(cpu[kind].map((split) => split.qemuTotal + split.oursTotal));
  const target = local / 0.7;
  const busy = median(cpu.remote.map((split) => split.busy));
  const had = total('remote') / remote;
  console.log(
    `CPU budget at 0.7x (${target.toFixed(2)} s) on ${cores} cores: QEMU and libvirt-backup took ${total('remote').toFixed(2)} s of CPU over TLS, ` +
      `${total('local').toFixed(2)} s over the unix socket; the cores were ${(100 * busy).toFixed(0)} % busy, ${((100 * had) / cores).toFixed(0)} % with this backup ` +
      `and ${Math.max(0, 100 * busy - (100 * had) / cores).toFixed(0)} % with other work; at 0.7x the backup would take ${(total('remote') / target).toFixed(2)} cores${total('remote') / target > cores ? ', more than the machine has' : ''}, ` +
      `it had ${had.toFixed(2)}${busy >= 0.95 ? ' and no core was idle' : ''}; QEMU's busiest thread alone needed ${median(cpu.remote.map((split) => split.qemuBusiest)).toFixed(2)} s`,
  );
} finally {
  await ours.cleanup();
  await peer.cleanup();
  await conn.close();
  rmSync(work, { recursive: true, force: true });
}
