import { execFile, spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { ExecutionContext } from 'ava';
import { BackupSet } from '../../src/backup/set/backup-set.js';
import { checksumFile } from '../../src/backup/checksum.js';
import { backupFileName, type BackupLevel, type BackupRecord, type DiskRecord } from '../../src/backup/set/manifest.js';

const exec = promisify(execFile);

export const MiB = 1024 * 1024;
export const DOMAIN = { name: 'vm1', uuid: '4dea22b3-1d52-d8f3-2516-782e98ab3fa0', xml: '<domain type="kvm"><name>vm1</name></domain>' };

export async function tempDir(t: ExecutionContext, prefix = 'backup-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `lvb-${prefix}`));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export async function qemuIo(file: string, format: 'qcow2' | 'raw', command: string): Promise<void> {
  await exec('qemu-io', ['-f', format, '-c', command, file]);
}

export async function qemuImg(...args: string[]): Promise<string> {
  return (await exec('qemu-img', args)).stdout;
}

export async function imagesEqual(first: string, second: string): Promise<boolean> {
  try {
    await exec('qemu-img', ['compare', first, second]);
    return true;
  } catch {
    return false;
  }
}

/** The pid of a process that has exited: a lock or journal owner that is certainly dead. */
export function deadPid(): number {
  const child = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(child.stdout);
}

export interface Write {
  pattern: number;
  offset: number;
  length: number;
}

export interface DiskSpec {
  target: string;
  /** qcow2 sources can track changes; raw ones get a full copy at every level. */
  sourceFormat: 'qcow2' | 'raw';
  size: number;
}

/**
 * Builds a backup set the way the engine will, without libvirt: each disk has a raw
 * "reference" image that receives the guest writes; a backup writes the changed regions
 * into a qcow2 overlay of the previous backup (or a full copy), and the reference at that
 * moment is saved so tests can compare restores against it.
 */
export class SetBuilder {
  private readonly referencesDir: string;
  private readonly writesSinceBackup = new Map<string, Write[]>();
  private readonly writesSinceFull = new Map<string, Write[]>();

  private constructor(
    readonly root: string,
    readonly set: BackupSet,
    readonly disks: DiskSpec[],
  ) {
    this.referencesDir = join(root, 'refs');
  }

  static async create(t: ExecutionContext, disks: DiskSpec[]): Promise<SetBuilder> {
    const root = await tempDir(t);
    const set = await BackupSet.create(join(root, 'set'), DOMAIN);
    t.teardown(() => set.close());
    const builder = new SetBuilder(root, set, disks);
    await mkdir(builder.referencesDir);
    for (const disk of disks) {
      await qemuImg('create', '-q', '-f', 'raw', builder.referencePath(disk.target), String(disk.size));
      builder.writesSinceBackup.set(disk.target, []);
      builder.writesSinceFull.set(disk.target, []);
    }
    return builder;
  }

  get dir(): string {
    return this.set.dir;
  }

  referencePath(target: string): string {
    return join(this.referencesDir, `${target}.current.raw`);
  }

  /** The guest content of `target` when backup `id` was taken. */
  referenceAt(target: string, id: string): string {
    return join(this.referencesDir, `${target}.${id}.raw`);
  }

  async guestWrite(target: string, write: Write): Promise<void> {
    await qemuIo(this.referencePath(target), 'raw', `write -P ${write.pattern} ${write.offset} ${write.length}`);
    this.writesSinceBackup.get(target)!.push(write);
    this.writesSinceFull.get(target)!.push(write);
  }

  async backup(level: BackupLevel, options: { checkpoint?: boolean } = {}): Promise<BackupRecord> {
    const set = this.set;
    const id = set.nextId();
    const parent = set.nextLevelParent(level);
    const startedAt = new Date().toISOString();
    const plans = this.disks.map((disk) => {
      const diskLevel: BackupLevel = disk.sourceFormat === 'qcow2' ? level : 'full';
      const parentDisk = parent?.disks.find((candidate) => candidate.target === disk.target);
      return { disk, diskLevel: parentDisk ? diskLevel : 'full', parentDisk };
    });
    await set.beginRun(plans.map(({ disk, diskLevel }) => backupFileName(disk.target, id, diskLevel)));
    const records: DiskRecord[] = [];
    for (const { disk, diskLevel, parentDisk } of plans) {
      const file = backupFileName(disk.target, id, diskLevel);
      const path = set.pathOf(file);
      let dataBytes: number;
      if (diskLevel === 'full') {
        await qemuImg('convert', '-f', 'raw', '-O', 'qcow2', this.referencePath(disk.target), path);
        dataBytes = disk.size;
      } else {
        await qemuImg('create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', parentDisk!.file, path);
        const writes = diskLevel === 'inc' ? this.writesSinceBackup.get(disk.target)! : this.writesSinceFull.get(disk.target)!;
        for (const write of writes) await qemuIo(path, 'qcow2', `write -P ${write.pattern} ${write.offset} ${write.length}`);
        dataBytes = writes.reduce((sum, write) => sum + write.length, 0);
      }
      records.push({
        target: disk.target,
        sourceFormat: disk.sourceFormat,
        level: diskLevel,
        file,
        backingFile: diskLevel === 'full' ? null : parentDisk!.file,
        virtualSize: disk.size,
        fileSize: (await stat(path)).size,
        dataBytes,
        checksum: await checksumFile(path),
      });
      await exec('cp', ['--sparse=always', this.referencePath(disk.target), this.referenceAt(disk.target, id)]);
      this.writesSinceBackup.set(disk.target, []);
      if (level === 'full') this.writesSinceFull.set(disk.target, []);
    }
    const record: BackupRecord = {
      id,
      level,
      transport: 'pull',
      startedAt,
      completedAt: new Date().toISOString(),
      checkpoint: options.checkpoint === false ? null : `cp-${id}`,
      checkpointXml: options.checkpoint === false ? null : `<domaincheckpoint><name>cp-${id}</name></domaincheckpoint>`,
      parent: parent?.id ?? null,
      disks: records,
    };
    await set.commitBackup(record);
    return record;
  }

  /** Writes a few distinct regions, so each backup changes something different. */
  async churn(step: number): Promise<void> {
    for (const [index, disk] of this.disks.entries()) {
      const pattern = (0x20 + step * 7 + index) & 0xff;
      const offset = ((step * 3 + index) % Math.floor(disk.size / (256 * 1024))) * 256 * 1024;
      await this.guestWrite(disk.target, { pattern, offset, length: 256 * 1024 });
      if (step % 2 === 0) await this.guestWrite(disk.target, { pattern: pattern ^ 0x5a, offset: disk.size - 64 * 1024, length: 64 * 1024 });
    }
  }
}

export const TWO_DISKS: DiskSpec[] = [
  { target: 'vda', sourceFormat: 'qcow2', size: 4 * MiB },
  { target: 'vdb', sourceFormat: 'raw', size: 2 * MiB },
];

export const ONE_DISK: DiskSpec[] = [{ target: 'vda', sourceFormat: 'qcow2', size: 4 * MiB }];

/** Builds a set with the given levels, writing between backups; the first write seeds the disk. */
export async function buildSet(t: ExecutionContext, levels: BackupLevel[], disks: DiskSpec[] = ONE_DISK): Promise<SetBuilder> {
  const builder = await SetBuilder.create(t, disks);
  for (const disk of disks) await builder.guestWrite(disk.target, { pattern: 0x11, offset: 0, length: MiB });
  for (const [step, level] of levels.entries()) {
    if (step > 0) await builder.churn(step);
    await builder.backup(level);
  }
  return builder;
}

export async function fileExists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
