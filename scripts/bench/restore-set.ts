// The backup set the restore benchmarks read: one 2 GiB disk of random data (a full
// backup and an incremental of 64 MiB), built once and cached under .bench/restore.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { BackupSet, checksumFile, type BackupRecord } from '../../src/backup/index.js';

export const SIZE_GIB = Number(process.env.BENCH_RESTORE_GIB ?? 2);
const cacheDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '.bench', 'restore');
const DOMAIN = { name: 'bench', uuid: '0b2f4c1e-8d3a-4e55-9c61-7a0f6d2b9e10', xml: '<domain type="kvm"><name>bench</name></domain>' };

export function sh(command: string, args: string[]): string {
  return execFileSync(command, args, { encoding: 'utf8', maxBuffer: 64 * 2 ** 20, stdio: ['ignore', 'pipe', 'pipe'] });
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
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

/** The cached set (built on first use), its chain read once into the page cache. */
export async function benchSet(): Promise<{ set: BackupSet; dir: string }> {
  mkdirSync(cacheDir, { recursive: true });
  const dir = join(cacheDir, `set-${SIZE_GIB}g`);
  if (!existsSync(join(dir, 'manifest.json'))) {
    rmSync(dir, { recursive: true, force: true });
    console.log(`building a ${SIZE_GIB} GiB backup set of random data (cached in ${cacheDir})...`);
    await (await buildSet(dir)).close();
  }
  sh('sh', ['-c', `cat '${dir}'/*.qcow2 > /dev/null`]);
  return { set: await BackupSet.open(dir), dir };
}
