// Restore throughput on a 2 GiB disk of random data (a full backup and an
// incremental of 64 MiB), against `qemu-img convert` of the same chain followed by
// an fsync, which is what restore did before it read the chain itself. Rounds
// alternate ours and qemu-img's; medians are reported. The chain stays in the page
// cache for both (it is read once before timing), so the figures compare the work
// done, not the disk's read speed.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

import { BackupSet, checksumFile, restore, type BackupRecord } from '../../src/backup/index.js';

const SIZE_GIB = Number(process.env.BENCH_RESTORE_GIB ?? 2);
const ROUNDS = Number(process.env.BENCH_RESTORE_ROUNDS ?? 3);
const cacheDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '.bench', 'restore');
const DOMAIN = { name: 'bench', uuid: '0b2f4c1e-8d3a-4e55-9c61-7a0f6d2b9e10', xml: '<domain type="kvm"><name>bench</name></domain>' };

function sh(command: string, args: string[]): string {
  return execFileSync(command, args, { encoding: 'utf8', maxBuffer: 64 * 2 ** 20, stdio: ['ignore', 'pipe', 'pipe'] });
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

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

/** A set holding a full backup of random data and an incremental over it. */
async function buildSet(dir: string): Promise<BackupSet> {
  const size = SIZE_GIB * 2 ** 30;
  const set = await BackupSet.create(dir, DOMAIN);
  const record = async (id: string, level: 'full' | 'inc', file: string, parent: BackupRecord | null): Promise<BackupRecord> => {
    const path = set.pathOf(file);
    return {
      id,
      level,
      transport: 'pull',
      startedAt: new Date().toISOString(),
      completedAt: new Date().toISOString(),
      checkpoint: null,
      checkpointXml: null,
      parent: parent?.id ?? null,
      disks: [
        {
          target: 'vda',
          sourceFormat: 'qcow2',
          level,
          file,
          backingFile: parent === null ? null : parent.disks[0]!.file,
          virtualSize: size,
          fileSize: statSync(path).size,
          dataBytes: level === 'full' ? size : 64 * 2 ** 20,
          checksum: await checksumFile(path),
        },
      ],
    };
  };
  await set.beginRun(['vda.0001.full.qcow2']);
  const raw = join(dir, 'source.raw');
  sh('sh', ['-c', `head -c ${SIZE_GIB}G /dev/urandom > '${raw}'`]);
  sh('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, set.pathOf('vda.0001.full.qcow2')]);
  rmSync(raw);
  const full = await record('0001', 'full', 'vda.0001.full.qcow2', null);
  await set.commitBackup(full);
  await set.beginRun(['vda.0002.inc.qcow2']);
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', 'vda.0001.full.qcow2', set.pathOf('vda.0002.inc.qcow2')]);
  sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 100M 32M', '-c', `write -P 0xa5 ${SIZE_GIB * 1024 - 40}M 32M`, set.pathOf('vda.0002.inc.qcow2')]);
  await set.commitBackup(await record('0002', 'inc', 'vda.0002.inc.qcow2', full));
  return set;
}

mkdirSync(cacheDir, { recursive: true });
const setDir = join(cacheDir, `set-${SIZE_GIB}g`);
if (!existsSync(join(setDir, 'manifest.json'))) {
  rmSync(setDir, { recursive: true, force: true });
  console.log(`building a ${SIZE_GIB} GiB backup set of random data (cached in ${cacheDir})...`);
  await (await buildSet(setDir)).close();
}
const set = await BackupSet.open(setDir);
const top = set.pathOf('vda.0002.inc.qcow2');
const chainBytes = set.chainFor('vda').reduce((sum, link) => sum + link.disk.fileSize, 0);
const work = mkdtempSync(join(process.env['BENCH_RESTORE_DIR'] ?? tmpdir(), 'lvb-restore-bench-'));
// Into the page cache, for both.
sh('sh', ['-c', `cat '${setDir}'/*.qcow2 > /dev/null`]);

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
