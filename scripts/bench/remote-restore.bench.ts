// Restore of the latest point of the 2 GiB random disk (restore-set.ts) into a storage
// pool through libvirt streams, over qemu+tls:// (the remote way) and over the local
// unix socket, against restore to a local file, in the same run, rounds alternating;
// medians are reported. The chain is in the page cache for all of them. Needs the remote
// test rig of scripts/setup-host.sh for the TLS figures.
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

import { restore, restoreToPool } from '../../src/backup/index.js';
import { connect, StoragePoolCreateFlags, type Connection } from '../../src/index.js';
import { REMOTE_URIS } from '../../test/helpers/remote-rig.js';
import { SIZE_GIB, benchSet, median, sh } from './restore-set.js';
import { busiestThread, busyShare, clientCpuSeconds, daemonPid, machineTicks, processCpuSeconds, threadCpu } from './process-cpu.js';

const ROUNDS = Number(process.env.BENCH_REMOTE_ROUNDS ?? 3);
const POOL_DIR = process.env.BENCH_POOL_DIR ?? '/var/lib/libvirt/images';

async function timed(fn: () => Promise<unknown>): Promise<number> {
  // No dirty pages of the previous step left to throttle this one.
  sh('sync', []);
  const start = performance.now();
  await fn();
  return (performance.now() - start) / 1000;
}

/** Where an upload's CPU went: the daemon that writes the volume, its busiest thread, this process; and how busy the cores were. */
interface UploadCpu {
  daemon: number;
  daemonBusiest: number;
  /** This process and the children it waited for (virsh). */
  ours: number;
  busy: number;
}

/** The daemon that runs the storage driver: the modular one, or the monolithic libvirtd. */
const storageDaemon = daemonPid(['virtstoraged', 'libvirtd']);

async function timedWithCpu(fn: () => Promise<unknown>): Promise<{ seconds: number; cpu: UploadCpu }> {
  const daemonBefore = processCpuSeconds(storageDaemon);
  const threadsBefore = threadCpu(storageDaemon);
  const machineBefore = machineTicks();
  const clientBefore = clientCpuSeconds();
  const seconds = await timed(fn);
  return {
    seconds,
    cpu: {
      daemon: processCpuSeconds(storageDaemon) - daemonBefore,
      daemonBusiest: busiestThread(threadsBefore, threadCpu(storageDaemon)),
      ours: clientCpuSeconds() - clientBefore,
      busy: busyShare(machineBefore, machineTicks()),
    },
  };
}

/** `virsh vol-upload --sparse` of `file` into a new volume of the bench's pool, the volume made as restore makes its own. */
async function virshUpload(via: 'tls' | 'unix', format: 'raw' | 'qcow2', file: string): Promise<void> {
  const uri = via === 'tls' ? REMOTE_URIS.tls : 'qemu:///system';
  const capacity = `${SIZE_GIB * 2 ** 30}`;
  sh('virsh', ['-q', '-c', uri, 'vol-create-as', poolName, `virsh.${format}`, capacity, '--format', format, '--allocation', '0']);
  sh('virsh', ['-q', '-c', uri, 'vol-upload', '--sparse', '--pool', poolName, `virsh.${format}`, file]);
}

const { set } = await benchSet();
const poolName = `lvb-bench-restore-${process.pid}`;
const poolPath = join(POOL_DIR, poolName);
const local = await connect('qemu:///system');
const pool = await local.createStoragePool({ type: 'dir', name: poolName, path: poolPath, mode: 0o700 }, StoragePoolCreateFlags.WITH_BUILD);
const connections: Record<string, Connection> = { unix: local, tls: await connect(REMOTE_URIS.tls) };
const work = mkdtempSync(join(process.env['BENCH_RESTORE_DIR'] ?? tmpdir(), 'lvb-remote-restore-bench-'));
const results: Record<string, number[]> = {};
const note = (key: string, seconds: number) => (results[key] ??= []).push(seconds);
const sent: Record<string, number> = {};
const cpu: Record<string, UploadCpu[]> = {};
try {
  for (let round = 0; round < ROUNDS; round++) {
    for (const format of ['raw', 'qcow2'] as const) {
      const file = join(work, `local.${format}`);
      note(`file ${format}`, await timed(() => restore(set, { to: file, format })));
      // libvirt's own client uploading the same bytes, read from the page cache: what
      // the daemon's side of a stream allows whoever sends.
      sh('sh', ['-c', 'cat "$0" > /dev/null', file]);
      for (const via of ['tls', 'unix'] as const) {
        const upload = await timedWithCpu(() => virshUpload(via, format, file));
        note(`virsh ${via} ${format}`, upload.seconds);
        (cpu[`virsh ${via} ${format}`] ??= []).push(upload.cpu);
        for (const volume of await pool.listAllVolumes()) await volume.delete();
      }
      rmSync(file);
      for (const [via, connection] of Object.entries(connections)) {
        let bytes = 0;
        const upload = await timedWithCpu(async () => {
          const result = await restoreToPool(set, { connection, pool: poolName, format });
          bytes = result.disks[0]!.sent.dataBytes;
        });
        note(`${via} ${format}`, upload.seconds);
        (cpu[`${via} ${format}`] ??= []).push(upload.cpu);
        sent[`${via} ${format}`] = bytes;
        for (const volume of await pool.listAllVolumes()) await volume.delete();
      }
    }
  }
} finally {
  rmSync(work, { recursive: true, force: true });
  for (const volume of await pool.listAllVolumes()) await volume.delete().catch(() => undefined);
  await pool.destroy().catch(() => undefined);
  rmSync(poolPath, { recursive: true, force: true });
  for (const connection of Object.values(connections)) await connection.close();
}

const rate = (seconds: number) => `${((SIZE_GIB * 1024) / seconds).toFixed(0)} MiB/s`;
console.log(
  `Restore of the latest point of a ${SIZE_GIB} GiB disk of random data into a storage pool through libvirt streams vs. to a local file, median of ${ROUNDS} rounds (load average at the end: ${sh('cat', ['/proc/loadavg']).split(' ').slice(0, 3).join(' ')}):\n`,
);
console.log('| format | to a file | pool over qemu+tls:// | ratio | pool over the unix socket | ratio | data sent |');
console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
for (const format of ['raw', 'qcow2'] as const) {
  const file = median(results[`file ${format}`]!);
  const tls = median(results[`tls ${format}`]!);
  const unix = median(results[`unix ${format}`]!);
  console.log(
    `| ${format} | ${file.toFixed(2)} s (${rate(file)}) | ${tls.toFixed(2)} s (${rate(tls)}) | ${(file / tls).toFixed(2)}x | ${unix.toFixed(2)} s (${rate(unix)}) | ${(file / unix).toFixed(2)}x | ${(sent[`tls ${format}`]! / 2 ** 20).toFixed(0)} MiB |`,
  );
}
// The same daemon receiving from libvirt's own client: a restore that reads, checks and
// sends the chain against an upload of the finished file.
console.log(
  '\n| format | restore --pool over qemu+tls:// | virsh vol-upload --sparse of the restored file | restore / virsh | over the unix socket: restore | virsh | restore / virsh |',
);
console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
for (const format of ['raw', 'qcow2'] as const) {
  const row = (via: 'tls' | 'unix') => {
    const ours = median(results[`${via} ${format}`]!);
    const virsh = median(results[`virsh ${via} ${format}`]!);
    return `${ours.toFixed(2)} s | ${virsh.toFixed(2)} s | ${(virsh / ours).toFixed(2)}x`;
  };
  console.log(`| ${format} | ${row('tls')} | ${row('unix')} |`);
}
// A stream into a volume is received, decoded and written by the daemon: at 0.7x of the
// file restore, the CPU the upload took against what the cores could give it.
const cores = availableParallelism();
console.log('\n| upload | daemon CPU (busiest thread) | client CPU (libvirt-backup or virsh) | cores busy | at 0.7x would take | had |');
console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
for (const format of ['raw', 'qcow2'] as const) {
  const target = median(results[`file ${format}`]!) / 0.7;
  for (const via of ['tls', 'unix', 'virsh tls', 'virsh unix']) {
    const key = `${via} ${format}`;
    const of = (field: keyof UploadCpu) => median(cpu[key]!.map((entry) => entry[field]));
    const total = median(cpu[key]!.map((entry) => entry.daemon + entry.ours));
    console.log(
      `| ${format} over ${via} | ${of('daemon').toFixed(2)} s (${of('daemonBusiest').toFixed(2)} s) | ${of('ours').toFixed(2)} s | ${(100 * of('busy')).toFixed(0)} % of ${cores} | ` +
        `${(total / target).toFixed(2)} cores | ${(total / median(results[key]!)).toFixed(2)} cores |`,
    );
  }
}
console.log(
  `\nall rounds (s): ${JSON.stringify(Object.fromEntries(Object.entries(results).map(([key, values]) => [key, values.map((value) => Number(value.toFixed(2)))])))}`,
);
