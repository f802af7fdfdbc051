// The command killed outright (the OOM killer, a power cut of the process): nothing
// of its own cleanup runs, so everything is owed by the next run.
import type { FaultKind, FaultScene } from './fault.js';
import { awaitTrigger, describeTrigger, planTrigger } from './trigger.js';

export const sigkill: FaultKind = {
  name: 'sigkill',
  transports: ['pull', 'push'],
  immediateCleanup: { libvirt: false, files: false },
  plan: (rng, timings) =>
    rng.chance(0.3)
      ? // QEMU goes on writing a push backup's files after the command died: the next run must not take them for leftovers.
        {
          trigger: { at: 'event', event: 'start', thenMs: rng.int(20, 150) },
          variant: 'during a full push job',
          level: 'full',
          transport: 'push',
          nextAtOnce: true,
        }
      : { trigger: planTrigger(rng, timings), variant: 'SIGKILL', nextAtOnce: rng.chance(0.5) },
  describe: (planned) =>
    `SIGKILL of the command ${describeTrigger(planned.trigger)}${planned.variant === 'SIGKILL' ? '' : ` ${planned.variant}`}${planned.nextAtOnce ? ', next backup at once' : ''}`,
  async inject(scene, planned, cli) {
    let throttled = '';
    if (planned.variant === 'during a full push job' && (await cli.waitForEvent((event) => event.type === 'start')) !== null) {
      throttled = await throttlePushJobs(scene);
    }
    const landed = (await awaitTrigger(planned.trigger, cli)) && cli.kill('SIGKILL');
    return { landed, detail: `${landed ? 'killed' : 'the backup had ended'}${throttled}` };
  },
  async repair() {},
  expectedExit(outcome, injection) {
    if (injection.landed) return outcome.signal === 'SIGKILL' ? null : 'death by SIGKILL';
    return outcome.code === 0 && outcome.result !== undefined ? null : 'exit 0 (the backup ended before the signal)';
  },
};

/** A slow destination, made with QEMU's own job speed limit: the push job then outlives the command by seconds. */
async function throttlePushJobs(scene: FaultScene): Promise<string> {
  const deadline = Date.now() + 3000;
  while (Date.now() < deadline) {
    const jobs = await scene.link.withDomain(scene.domain.name, async (domain) => {
      const listed = JSON.parse(await domain.qemuMonitorCommand(JSON.stringify({ execute: 'query-block-jobs' }))) as {
        return?: Array<{ device: string; type: string }>;
      };
      const backups = (listed.return ?? []).filter((job) => job.type === 'backup');
      for (const job of backups)
        await domain.qemuMonitorCommand(JSON.stringify({ execute: 'block-job-set-speed', arguments: { device: job.device, speed: PUSH_SPEED } }));
      return backups.map((job) => job.device);
    });
    if (jobs.length > 0) return `, push jobs ${jobs.join(', ')} slowed to ${PUSH_SPEED / 2 ** 20} MiB/s`;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return ', no push job to slow down';
}

const PUSH_SPEED = 2 * 2 ** 20;
