// SIGTERM (a supervisor stopping the job, a shutdown): the command promises to end
// the libvirt job, remove this run's files and checkpoint, and exit 143 with the
// manifest as it was; or, when the signal came too late, to finish and say so.
import type { FaultKind } from './fault.js';
import { awaitTrigger, describeTrigger, planTrigger } from './trigger.js';

export const sigterm: FaultKind = {
  name: 'sigterm',
  transports: ['pull', 'push'],
  immediateCleanup: { libvirt: true, files: true },
  plan: (rng, timings) => ({ trigger: planTrigger(rng, timings), variant: 'SIGTERM' }),
  describe: (planned) => `SIGTERM to the command ${describeTrigger(planned.trigger)}`,
  async inject(_scene, planned, cli) {
    const landed = (await awaitTrigger(planned.trigger, cli)) && cli.kill('SIGTERM');
    return { landed, detail: landed ? 'signalled' : 'the backup had ended' };
  },
  async repair() {},
  expectedExit(outcome, _injection, setUnchanged) {
    if (outcome.hung) return 'exit 143 or 0, not a hang';
    if (outcome.code === 143 && outcome.error?.['code'] === 'INTERRUPTED') return null;
    // Before Node has installed the handler, SIGTERM kills the process: a shell sees 143
    // all the same, and nothing can have been started yet.
    if (outcome.signal === 'SIGTERM' && setUnchanged && outcome.events.length === 0) return null;
    if (outcome.code === 0 && outcome.result !== undefined) return null;
    return 'exit 143 with an INTERRUPTED error line, exit 0 with a result (signal too late), or death by SIGTERM before any output';
  },
};
