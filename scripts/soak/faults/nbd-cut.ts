// The NBD connection of a pull backup is cut: by a proxy between libvirt's export and the
// command that drops it (the command connects to the proxy through the engine's test
// hook), or from QEMU's side: its NBD server stopped, or the export removed with its
// clients disconnected.
import { TEST_NBD_PROXY_SOCKET_VARIABLE } from '../../../src/backup/engine/export-connection.js';
import { cuttingProxy, type CuttingProxy } from '../../../test/helpers/nbd-proxy.js';
import { exitedCleanly, type FaultKind, type FaultScene } from './fault.js';
import { afterEvent, awaitTrigger, describeTrigger, planTrigger } from './trigger.js';

/** The proxy of the run in progress (runs are one at a time). */
let proxy: CuttingProxy | undefined;

async function exportSocket(scene: FaultScene): Promise<string> {
  const spec = await scene.link.withDomain(scene.domain.name, (domain) => domain.backupGetSpec());
  if (spec.mode !== 'pull' || spec.server?.transport !== 'unix') throw new Error('no pull backup job with a unix socket on the domain');
  return spec.server.socket;
}

export const nbdCut: FaultKind = {
  name: 'nbd-cut',
  transports: ['pull'],
  immediateCleanup: { libvirt: true, files: true },
  // A full backup, so that the export is read long enough to be cut while in use.
  plan: (rng, timings) => {
    const variant = rng.pick(['a dropping proxy', 'QMP nbd-server-stop', 'QMP block-export-del mode=hard']);
    // The server is stopped only once the copy runs: stopped while a client is still
    // negotiating, QEMU 7.2 as Debian ships it freezes, guest and all (README, "Known
    // problems"), which no client can prevent. The command finishes every handshake
    // before its first 'progress' event.
    const trigger = variant === 'QMP nbd-server-stop' ? afterEvent(rng, timings, 'progress') : planTrigger(rng, timings, ['start', 'progress']);
    return { trigger, level: 'full', variant };
  },
  describe: (planned) => `NBD connection cut by ${planned.variant} ${describeTrigger(planned.trigger)}`,
  async prepare(scene, planned) {
    if (planned.variant !== 'a dropping proxy') return;
    proxy = await cuttingProxy(() => exportSocket(scene));
    return { [TEST_NBD_PROXY_SOCKET_VARIABLE]: proxy.socket };
  },
  async inject(scene, planned, cli) {
    if (!(await awaitTrigger(planned.trigger, cli))) return { landed: false, detail: 'the backup had ended' };
    if (planned.variant === 'a dropping proxy') {
      const landed = proxy!.cut();
      return { landed, detail: landed ? `cut after ${proxy!.cutAfter} bytes from the server` : 'no connection open through the proxy' };
    }
    return scene.link.withDomain(scene.domain.name, async (domain) => {
      if (planned.variant === 'QMP nbd-server-stop') {
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
  async repair() {
    await proxy?.close();
    proxy = undefined;
  },
  expectedExit: (outcome) => exitedCleanly(outcome),
};
