// The domain is destroyed (pulled plug, host OOM) while it is being backed up, and
// started again: at once, or once the command has given up.
import { exitedCleanly, type FaultKind } from './fault.js';
import { awaitTrigger, describeTrigger, planTrigger } from './trigger.js';

export const domainDestroy: FaultKind = {
  name: 'domain-destroy',
  transports: ['pull', 'push'],
  // libvirt refuses to delete a checkpoint of a domain that is shut off.
  immediateCleanup: { libvirt: false, files: true },
  plan: (rng, timings) => ({ trigger: planTrigger(rng, timings), variant: rng.pick(['restart at once', 'restart after the command']) }),
  describe: (planned) => `domain destroyed ${describeTrigger(planned.trigger)}, ${planned.variant}`,
  async inject(scene, planned, cli) {
    if (!(await awaitTrigger(planned.trigger, cli))) return { landed: false, detail: 'the backup had ended' };
    await scene.domain.destroy();
    if (planned.variant === 'restart at once') await scene.domain.start();
    return { landed: true, detail: 'destroyed' };
  },
  async repair(scene) {
    if (!(await scene.domain.isActive())) await scene.domain.start();
  },
  // Destroyed before the command looked at it, the domain is "not running": bad input
  // (exit 2) by the exit codes, fine as long as nothing in the set changed.
  expectedExit: (outcome, _injection, setUnchanged) =>
    outcome.code === 2 && outcome.error?.['code'] === 'DOMAIN_NOT_RUNNING' && setUnchanged ? null : exitedCleanly(outcome),
};
