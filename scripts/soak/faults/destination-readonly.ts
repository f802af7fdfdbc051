// The destination turns read-only mid-run: remounted read-only by an operator (the
// kernel allows that only between two files), or by ext4 itself after an error (at
// once, files open or not; repaired with e2fsck afterwards). The command cannot
// remove its files from a read-only set, so those are owed by the next run.
import { exitedCleanlyOrRefusedDestination, type FaultKind } from './fault.js';
import { awaitTrigger, describeTrigger, planTrigger } from './trigger.js';

export const destinationReadOnly: FaultKind = {
  name: 'destination-readonly',
  transports: ['pull', 'push'],
  immediateCleanup: { libvirt: true, files: false },
  plan: (rng, timings) => ({ trigger: planTrigger(rng, timings), variant: rng.pick(['mount -o remount,ro', 'ext4 error (errors=remount-ro)']) }),
  describe: (planned) => `destination read-only by ${planned.variant} ${describeTrigger(planned.trigger)}`,
  async inject(scene, planned, cli) {
    if (!(await awaitTrigger(planned.trigger, cli))) return { landed: false, detail: 'the backup had ended' };
    if (planned.variant === 'mount -o remount,ro') {
      const started = Date.now();
      const landed = await scene.destination.remountReadOnlyWhenIdle(() => cli.exited);
      return { landed, detail: landed ? `read-only after ${Date.now() - started} ms of retries` : 'the backup ended before the file system was idle' };
    }
    await scene.destination.failIntoReadOnly();
    return { landed: true, detail: 'ext4 error raised' };
  },
  async repair(scene, _planned, injection, log) {
    const before = (await scene.destination.options()).join(',');
    const holders = await scene.destination.makeWritable();
    injection.detail += `; repaired (${before} -> ${(await scene.destination.options()).join(',')})`;
    log.record(
      'destination-released',
      holders.length === 0
        ? null
        : { expected: 'no process keeps files of the read-only destination open once the command has exited', actual: holders.join('; ') },
    );
    if (holders.length > 0) throw new Error('the destination cannot be repaired while processes hold it; the suite cannot go on');
  },
  expectedExit: (outcome, _injection, setUnchanged) => exitedCleanlyOrRefusedDestination(outcome, setUnchanged),
};
