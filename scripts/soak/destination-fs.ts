// The file system the backup set lives on in the faults suite: an ext4 image on a
// loop device, mounted with errors=remount-ro, so the soak can fill it up or turn it
// read-only while a backup writes to it, then repair it as an operator would.
import { statfs, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';

import { run, tryRun } from '../../test/helpers/process.js';
import { processesUsing } from './host-state.js';

const FILLER = '.soak-filler';

export class LoopExt4 {
  private constructor(
    readonly image: string,
    readonly mountPoint: string,
  ) {}

  static async create(image: string, mountPoint: string, sizeMiB: number): Promise<LoopExt4> {
    await run('truncate', ['-s', `${sizeMiB}M`, image]);
    // -m 0: no blocks reserved for root, or root (the soak) could never fill it.
    await run('mkfs.ext4', ['-q', '-F', '-m', '0', image]);
    await run('mkdir', ['-p', mountPoint]);
    const fs = new LoopExt4(image, mountPoint);
    await fs.mount();
    return fs;
  }

  private async mount(): Promise<void> {
    await run('mount', ['-o', 'loop,errors=remount-ro', this.image, this.mountPoint]);
  }

  private async device(): Promise<string> {
    return (await run('findmnt', ['-n', '-o', 'SOURCE', this.mountPoint])).trim();
  }

  async options(): Promise<string[]> {
    return (await run('findmnt', ['-n', '-o', 'OPTIONS', this.mountPoint])).trim().split(',');
  }

  async usage(): Promise<{ freeBytes: number; totalBytes: number }> {
    const info = await statfs(this.mountPoint);
    return { freeBytes: info.bavail * info.bsize, totalBytes: info.blocks * info.bsize };
  }

  /** Takes all free space but `leaveBytes` (roughly: file system metadata moves a little). */
  async fill(leaveBytes: number): Promise<void> {
    const { freeBytes } = await this.usage();
    const take = Math.max(0, freeBytes - leaveBytes);
    if (take === 0) return;
    const filler = join(this.mountPoint, FILLER);
    const done = await tryRun('fallocate', ['-l', String(take), filler]);
    // Free space changes while a backup writes; whatever fits is enough.
    if (done.code !== 0) await tryRun('fallocate', ['-l', String(Math.max(0, take - 16 * 1024 * 1024)), filler]);
  }

  async removeFiller(): Promise<void> {
    await run('rm', ['-f', join(this.mountPoint, FILLER)]);
  }

  /**
   * `mount -o remount,ro`, retried until it works: the kernel refuses while a file is open
   * for writing, so this lands between two files of the run. Gives up when `stop()` says so.
   */
  async remountReadOnlyWhenIdle(stop: () => boolean): Promise<boolean> {
    while (!stop()) {
      if ((await tryRun('mount', ['-o', 'remount,ro', this.mountPoint])).code === 0) return true;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    return false;
  }

  /** What a failing disk does: ext4 records an error and turns read-only at once, open files or not. */
  async failIntoReadOnly(): Promise<void> {
    await writeFile(`/sys/fs/ext4/${basename(await this.device())}/trigger_fs_error`, 'fault injected by the soak\n');
  }

  /**
   * Makes the file system writable again: a clean read-only mount is remounted; one that
   * went read-only on an error is unmounted, checked with e2fsck and mounted again. Returns
   * the processes that kept it from being unmounted, if any did (then it stays read-only).
   */
  async makeWritable(waitForUsersMs = 30_000): Promise<string[]> {
    const options = await this.options();
    if (options.includes('rw') && !options.includes('emergency_ro')) return [];
    if (!options.includes('emergency_ro')) {
      await run('mount', ['-o', 'remount,rw', this.mountPoint]);
      return [];
    }
    const deadline = Date.now() + waitForUsersMs;
    for (;;) {
      if ((await tryRun('umount', [this.mountPoint])).code === 0) break;
      if (Date.now() > deadline) return (await processesUsing([this.mountPoint])).map((use) => `pid ${use.pid} (${use.command}): ${use.why}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    // The loop device goes away with the last mount; while it stays, the file system is
    // still mounted somewhere (another mount namespace) and must not be checked.
    while ((await run('losetup', ['-j', this.image])).trim() !== '') {
      if (Date.now() > deadline)
        return [`the destination is still mounted outside the soak's mount namespace: ${(await run('losetup', ['-j', this.image])).trim()}`];
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    // e2fsck exits 1 when it fixed something, which is what it is here for.
    const checked = await tryRun('e2fsck', ['-f', '-y', this.image]);
    if (checked.code > 1) throw new Error(`e2fsck could not repair ${this.image} (exit ${checked.code}): ${checked.stdout}${checked.stderr}`);
    await this.mount();
    return [];
  }

  async unmount(): Promise<void> {
    await tryRun('umount', [this.mountPoint]);
  }
}
