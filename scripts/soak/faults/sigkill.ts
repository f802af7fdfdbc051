// The command killed outright (the OOM killer, a power cut of the process): nothing
// of its own cleanup runs, so everything is owed by the next run.
import type { FaultKind } from './fault.js';
import { awaitTrigger, describeTrigger, planTrigger } from './trigger.js';

export const sigkill: FaultKind = {
  name: 'sigkill',
  transports: ['pull', 'push'],
  immediateCleanup: { libvirt: false, files: false },
  plan: (rng, timings) => ({ trigger: planTrigger(rng, timings), variant: 'SIGKILL', nextAtOnce: rng.chance(0.5) }),
  describe: (planned) => `SIGKILL of the command ${describeTrigger(planned.trigger)}${planned.nextAtOnce ? ', next backup at once' : ''}`,
  async inject(_scene, planned, cli) {
    const landed = (await awaitTrigger(planned.trigger, cli)) && cli.kill('SIGKILL');
    return { landed, detail: landed ? 'killed' : 'the backup had ended' };
  },
  async repair() {},
  expectedExit(outcome, injection) {
    if (injection.landed) return outcome.signal === 'SIGKILL' ? null : 'death by SIGKILL';
    return outcome.code === 0 && outcome.result !== undefined ? null : 'exit 0 (the backup ended before the signal)';
  },
};
