// Shared by the engine tests: a domain whose disks are mirrored by raw reference
// images receiving the same writes, so every backup point has a known truth.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { ExecutionContext } from 'ava';

import type { Connection } from '../../src/index.js';
import { createThrowawayDomain, guestWrite, type DiskSpec, type ThrowawayDomain } from '../helpers/daemon.js';
import { run } from '../helpers/process.js';

export interface MirroredDomain {
  vm: ThrowawayDomain;
  /** Writes into the running domain's disk and into its reference image. */
  write(diskIndex: number, pattern: number, offset: string, length: string): Promise<void>;
  /** Writes into a shut-off domain's image file (`qemu-io`) and into its reference. */
  writeOffline(diskIndex: number, pattern: number, offset: string, length: string): Promise<void>;
  /** Copies each disk's reference as it is now, under `label`. */
  snapshot(label: string): Promise<void>;
  referenceAt(label: string, diskIndex: number): string;
  dir: string;
}

export async function mirroredDomain(t: ExecutionContext, conn: Connection, label: string, disks: DiskSpec[]): Promise<MirroredDomain> {
  const vm = await createThrowawayDomain(conn, label, disks);
  const dir = await mkdtemp(join(tmpdir(), `lvb-${label}-`));
  t.teardown(async () => {
    await vm.cleanup();
    await rm(dir, { recursive: true, force: true });
  });
  const refs = vm.disks.map((_, i) => join(dir, `ref-${i}.raw`));
  for (const [i, spec] of disks.entries()) await run('qemu-img', ['create', '-q', '-f', 'raw', refs[i]!, `${spec.sizeMiB ?? 16}M`]);
  return {
    vm,
    dir,
    async write(diskIndex, pattern, offset, length) {
      await guestWrite(vm.domain, diskIndex, pattern, offset, length);
      await run('qemu-io', ['-f', 'raw', '-c', `write -P 0x${pattern.toString(16)} ${offset} ${length}`, refs[diskIndex]!]);
    },
    async writeOffline(diskIndex, pattern, offset, length) {
      const disk = vm.disks[diskIndex]!;
      await run('qemu-io', ['-f', disk.format, '-c', `write -P 0x${pattern.toString(16)} ${offset} ${length}`, disk.path]);
      await run('qemu-io', ['-f', 'raw', '-c', `write -P 0x${pattern.toString(16)} ${offset} ${length}`, refs[diskIndex]!]);
    },
    async snapshot(name) {
      for (const [i, ref] of refs.entries()) await run('cp', ['--sparse=always', ref, join(dir, `${name}-${i}.raw`)]);
    },
    referenceAt(name, diskIndex) {
      return join(dir, `${name}-${diskIndex}.raw`);
    },
  };
}

export async function imagesIdentical(a: string, aFormat: string, b: string, bFormat: string): Promise<boolean> {
  const out = await run('qemu-img', ['compare', '-U', '-f', aFormat, '-F', bFormat, a, b]).catch((e: Error) => e.message);
  return /Images are identical/.test(out);
}
