// Restore of the latest point of the 2 GiB random disk (restore-set.ts) into a storage
// pool through libvirt streams, over qemu+tls:// (the remote way) and over the local
// unix socket, against restore to a local file, in the same run, rounds alternating;
// medians are reported. The chain is in the page cache for all of them. Needs the remote
// test rig of scripts/setup-host.sh for the TLS figures.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

import { restore, restoreToPool } from '../../src/backup/index.js';
import { connect, StoragePoolCreateFlags, type Connection } from '../../src/index.js';
import { REMOTE_URIS } from '../../test/helpers/remote-rig.js';
import { SIZE_GIB, benchSet, median, sh } from './restore-set.js';

const ROUNDS = Number(process.env.BENCH_REMOTE_ROUNDS ?? 3);
const POOL_DIR = process.env.BENCH_POOL_DIR ?? '/var/lib/libvirt/images';

async function timed(fn: () => Promise<unknown>): Promise<number> {
  // No dirty pages of the previous step left to throttle this one.
  sh('sync', []);
  const start = performance.now();
  await fn();
  return (performance.now() - start) / 1000;
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
try {
  for (let round = 0; round < ROUNDS; round++) {
    for (const format of ['raw', 'qcow2'] as const) {
      const file = join(work, `local.${format}`);
      note(`file ${format}`, await timed(() => restore(set, { to: file, format })));
      rmSync(file);
      for (const [via, connection] of Object.entries(connections)) {
        let bytes = 0;
        note(
          `${via} ${format}`,
          await timed(async () => {
            const result = await restoreToPool(set, { connection, pool: poolName, format });
            bytes = result.disks[0]!.sent.dataBytes;
          }),
        );
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
console.log(
  `\nall rounds (s): ${JSON.stringify(Object.fromEntries(Object.entries(results).map(([key, values]) => [key, values.map((value) => Number(value.toFixed(2)))])))}`,
);
