// libvirtd crashes and is started again while a backup runs. QEMU keeps running;
// the command loses its connection. It cannot reach libvirt to clean up there, so
// the job and checkpoint are owed by the next run; its own files it can remove.
import { exitedCleanly, type FaultKind } from './fault.js';
import { awaitTrigger, describeTrigger, planTrigger } from './trigger.js';

export const libvirtdKill: FaultKind = {
  name: 'libvirtd-kill',
  transports: ['pull', 'push'],
  immediateCleanup: { libvirt: false, files: true },
  plan: (rng, timings) => ({ trigger: planTrigger(rng, timings), variant: 'SIGKILL libvirtd', amount: rng.int(0, 1000) }),
  describe: (planned) => `libvirtd killed ${describeTrigger(planned.trigger)}, started again ${planned.amount} ms later`,
  async inject(scene, planned, cli) {
    if (!(await awaitTrigger(planned.trigger, cli))) return { landed: false, detail: 'the backup had ended' };
    const down = Date.now();
    await scene.daemon.kill();
    await new Promise((resolve) => setTimeout(resolve, planned.amount ?? 0));
    await scene.daemon.startLibvirtd();
    await scene.link.drop();
    return { landed: true, detail: `libvirtd down for ${Date.now() - down} ms` };
  },
  async repair() {},
  expectedExit: (outcome) => exitedCleanly(outcome),
};
