// The destination runs out of space: it was nearly full when the backup started, or
// something else fills it while the backup writes. The command must fail cleanly
// (or succeed if its files fit) and leave the set as it was.
import { run } from '../../../test/helpers/process.js';
import { exitedCleanlyOrRefusedDestination, type FaultKind } from './fault.js';
import { awaitTrigger, describeTrigger, planTrigger } from './trigger.js';

const MiB = 1024 * 1024;

/** Bytes of data the domain's disks hold: what a full backup needs, roughly. */
async function allocatedBytes(images: readonly string[]): Promise<number> {
  let total = 0;
  for (const image of images) total += (JSON.parse(await run('qemu-img', ['info', '-U', '--output=json', image])) as { 'actual-size': number })['actual-size'];
  return total;
}

export const destinationFull: FaultKind = {
  name: 'destination-full',
  transports: ['pull', 'push'],
  immediateCleanup: { libvirt: true, files: true },
  plan: (rng, timings) =>
    rng.chance(0.5)
      ? { trigger: { at: 'delay', ms: 0 }, variant: 'nearly full at the start', amount: rng.int(0, 999) }
      : { trigger: planTrigger(rng, timings), variant: 'filled during the run', amount: rng.int(0, 2 * MiB) },
  describe: (planned) =>
    planned.variant === 'nearly full at the start'
      ? `destination nearly full at the start (free space ${((planned.amount ?? 0) / 10).toFixed(1)} % of the disks' data)`
      : `destination filled ${describeTrigger(planned.trigger)}, ${planned.amount} bytes left`,
  async prepare(scene, planned) {
    if (planned.variant !== 'nearly full at the start') return;
    const data = await allocatedBytes(scene.domain.disks.map((disk) => disk.image));
    await scene.destination.fill(Math.round((data * (planned.amount ?? 0)) / 1000));
  },
  async inject(scene, planned, cli) {
    if (planned.variant === 'nearly full at the start') {
      const { freeBytes } = await scene.destination.usage();
      return { landed: true, detail: `${freeBytes} bytes free at the start` };
    }
    if (!(await awaitTrigger(planned.trigger, cli))) return { landed: false, detail: 'the backup had ended' };
    await scene.destination.fill(planned.amount ?? 0);
    return { landed: true, detail: `${(await scene.destination.usage()).freeBytes} bytes left free` };
  },
  async repair(scene) {
    await scene.destination.removeFiller();
  },
  expectedExit: (outcome, _injection, setUnchanged) => exitedCleanlyOrRefusedDestination(outcome, setUnchanged),
};
