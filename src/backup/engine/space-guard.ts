import { stat, statfs } from 'node:fs/promises';
import { formatBytes } from '../../common/format-bytes.js';
import { BackupError } from './engine-types.js';

/**
 * Keeps a running backup from ever costing the guest a write.
 *
 * While a backup job runs, QEMU copies the old content of every cluster the guest
 * overwrites (copy-before-write) into the pull job's scratch file or the push job's
 * target, before the guest's write may complete. If that copy fails for lack of space,
 * QEMU 7.2 as driven by libvirt 9.0 fails the guest's write, silently as far as the
 * domain's state goes. So the run keeps, at every moment, more free space on the file
 * systems it writes to than it may still consume: what copy-before-write may still put
 * into the scratch (bounded by the data the disks held when the job started, less what
 * the scratch already holds), plus what the backup files still have to receive. When the
 * free space falls below that (another process filled the disk), the job is ended at
 * once, which removes copy-before-write, and the backup fails; the guest never notices.
 */

/** Room kept free beyond the computed need: file system and qcow2 metadata, rounding. */
export const SPACE_RESERVE_BYTES = 16 * 2 ** 20;
const CHECK_INTERVAL_MS = 250;

export interface SpaceNeed {
  /** Bytes copy-before-write may still add to scratch files, if any. */
  scratch: number;
  /** Bytes the backup files may still grow by. */
  output: number;
}

export interface SpaceGuardOptions {
  scratchDir: string | null;
  outputDir: string;
  /** Asked at each check: what the run may still write. */
  need: () => Promise<SpaceNeed>;
  /** Called once, at the first check that fails, with the reason; the caller ends the job. */
  onExhausted: (error: BackupError) => void;
  intervalMs?: number;
}

interface Volume {
  dirs: string[];
  need: (need: SpaceNeed) => number;
}

export class SpaceGuard {
  private timer: NodeJS.Timeout | undefined;
  private checking = false;
  private failure: BackupError | null = null;
  private volumes: Volume[] = [];

  constructor(private readonly options: SpaceGuardOptions) {}

  get error(): BackupError | null {
    return this.failure;
  }

  /** Checks once (throwing NO_SPACE when short), then keeps checking until `stop()`. */
  async start(): Promise<void> {
    const { scratchDir, outputDir } = this.options;
    const sameVolume = scratchDir === null || (await stat(scratchDir)).dev === (await stat(outputDir)).dev;
    this.volumes = sameVolume
      ? [{ dirs: scratchDir === null || scratchDir === outputDir ? [outputDir] : [outputDir, scratchDir], need: (n) => n.scratch + n.output }]
      : [
          { dirs: [scratchDir], need: (n) => n.scratch },
          { dirs: [outputDir], need: (n) => n.output },
        ];
    const shortfall = await this.shortfall();
    if (shortfall !== null) throw shortfall;
    this.timer = setInterval(() => void this.tick(), this.options.intervalMs ?? CHECK_INTERVAL_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private async tick(): Promise<void> {
    if (this.checking || this.failure !== null || this.timer === undefined) return;
    this.checking = true;
    try {
      const shortfall = await this.shortfall();
      if (shortfall !== null && this.failure === null && this.timer !== undefined) {
        this.failure = shortfall;
        this.stop();
        this.options.onExhausted(shortfall);
      }
    } catch {
      // A check that cannot run (a job query racing the job's end) is not a shortfall;
      // the next tick asks again.
    } finally {
      this.checking = false;
    }
  }

  private async shortfall(): Promise<BackupError | null> {
    const need = await this.options.need();
    for (const volume of this.volumes) {
      const info = await statfs(volume.dirs[0]!);
      const free = Number(info.bavail) * Number(info.bsize);
      const required = volume.need(need) + SPACE_RESERVE_BYTES;
      if (free >= required) continue;
      const parts = [
        need.scratch > 0 && volume.need({ scratch: 1, output: 0 }) > 0 ? `${formatBytes(need.scratch)} of scratch for guest writes during the backup` : '',
        volume.need({ scratch: 0, output: 1 }) > 0 ? `${formatBytes(need.output)} of backup data` : '',
      ]
        .filter((part) => part !== '')
        .join(' and ');
      return new BackupError(
        'NO_SPACE',
        `not enough free space in ${volume.dirs.join(' and ')}: ${formatBytes(free)} available, the backup may still need ${parts || '0 B'} plus ${formatBytes(SPACE_RESERVE_BYTES)} of reserve; the job was ended so that no guest write could fail (free space, or put the scratch on another file system with --scratch-dir)`,
      );
    }
    return null;
  }
}
