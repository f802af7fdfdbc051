// Restore throughput on a 2 GiB disk of random data (a full backup and an
// incremental of 64 MiB), against `qemu-img convert` of the same chain followed by
// an fsync, which is what restore did before it read the chain itself. Rounds
// alternate ours and qemu-img's; medians are reported. The chain stays in the page
// cache for both (it is read once before timing), so the figures compare the work
// done, not the disk's read speed.
import { mkdtempSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

import { restore } from '../../src/backup/index.js';
import { SIZE_GIB, benchSet, median, sh } from './restore-set.js';

const ROUNDS = Number(process.env.BENCH_RESTORE_ROUNDS ?? 3);

async function timed(fn: () => Promise<unknown>): Promise<number> {
  // No dirty pages of the previous step may throttle this one.
  sh('sync', []);
  const start = performance.now();
  await fn();
  return (performance.now() - start) / 1000;
}

async function fsync(path: string): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

const { set } = await benchSet();
const top = set.pathOf('vda.0002.inc.qcow2');
const chainBytes = set.chainFor('vda').reduce((sum, link) => sum + link.disk.fileSize, 0);
const work = mkdtempSync(join(process.env['BENCH_RESTORE_DIR'] ?? tmpdir(), 'lvb-restore-bench-'));

const results: Record<string, number[]> = {};
const note = (key: string, seconds: number) => (results[key] ??= []).push(seconds);
try {
  for (let round = 0; round < ROUNDS; round++) {
    for (const format of ['raw', 'qcow2'] as const) {
      const ours = join(work, `ours.${format}`);
      note(`ours ${format}`, await timed(() => restore(set, { to: ours, format })));
      rmSync(ours);
      const theirs = join(work, `qemu-img.${format}`);
      note(
        `qemu-img ${format}`,
        await timed(async () => {
          sh('qemu-img', ['convert', '-f', 'qcow2', '-O', format, top, theirs]);
          await fsync(theirs);
        }),
      );
      rmSync(theirs);
    }
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}

const gib = SIZE_GIB;
console.log(
  `Restore of the latest point of a ${gib} GiB disk of random data (chain of ${set.chainFor('vda').length} files, ${(chainBytes / 2 ** 30).toFixed(2)} GiB), median of ${ROUNDS} rounds, chain in the page cache:\n`,
);
console.log('| output | libvirt-backup restore (reads and checks every chain file) | qemu-img convert + fsync | ratio (qemu-img / ours) |');
console.log('| --- | ---: | ---: | ---: |');
for (const format of ['raw', 'qcow2'] as const) {
  const ours = median(results[`ours ${format}`]!);
  const theirs = median(results[`qemu-img ${format}`]!);
  const rate = (seconds: number) => `${((gib * 1024) / seconds).toFixed(0)} MiB/s`;
  console.log(`| ${format} | ${ours.toFixed(2)} s (${rate(ours)}) | ${theirs.toFixed(2)} s (${rate(theirs)}) | ${(theirs / ours).toFixed(2)}x |`);
}
console.log(
  `\nall rounds (s): ${JSON.stringify(Object.fromEntries(Object.entries(results).map(([key, values]) => [key, values.map((value) => Number(value.toFixed(2)))])))}`,
);
