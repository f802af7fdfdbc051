// The NBD connection of a pull backup is cut. The command cannot be pointed at a
// proxy (it connects to the socket libvirt creates), so the cut comes from QEMU's
// side: its NBD server stopped, or the export removed with its clients disconnected.
import { exitedCleanly, type FaultKind } from './fault.js';
import { awaitTrigger, describeTrigger, planTrigger } from './trigger.js';

export const nbdCut: FaultKind = {
  name: 'nbd-cut',
  transports: ['pull'],
  immediateCleanup: { libvirt: true, files: true },
  // A full backup, so that the export is read long enough to be cut while in use.
  plan: (rng, timings) => ({
    trigger: planTrigger(rng, timings, ['start', 'progress']),
    level: 'full',
    variant: rng.pick(['nbd-server-stop', 'block-export-del mode=hard']),
  }),
  describe: (planned) => `NBD connection cut by QMP ${planned.variant} ${describeTrigger(planned.trigger)}`,
  async inject(scene, planned, cli) {
    if (!(await awaitTrigger(planned.trigger, cli))) return { landed: false, detail: 'the backup had ended' };
    return scene.link.withDomain(scene.domain.name, async (domain) => {
      if (planned.variant === 'nbd-server-stop') {
        const reply = await domain.qemuMonitorCommand(JSON.stringify({ execute: 'nbd-server-stop' }));
        return { landed: !reply.includes('"error"'), detail: reply.trim() };
      }
      const listed = JSON.parse(await domain.qemuMonitorCommand(JSON.stringify({ execute: 'query-block-exports' }))) as {
        return?: Array<{ id: string; type: string }>;
      };
      const exports = (listed.return ?? []).filter((entry) => entry.type === 'nbd');
      const replies = [];
      for (const entry of exports)
        replies.push(await domain.qemuMonitorCommand(JSON.stringify({ execute: 'block-export-del', arguments: { id: entry.id, mode: 'hard' } })));
      return {
        landed: exports.length > 0,
        detail: exports.length === 0 ? 'no NBD export (the job had ended)' : `removed ${exports.map((entry) => entry.id).join(', ')}`,
      };
    });
  },
  async repair() {},
  expectedExit: (outcome) => exitedCleanly(outcome),
};
