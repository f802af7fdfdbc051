// A second backup of the same domain starts while the first runs (two cron jobs, an
// operator and a schedule): into another set, or into the same one. libvirt runs one
// job per domain, so the second must fail; it must never end the first.
import { runCli } from '../cli-process.js';
import type { FaultKind } from './fault.js';
import { awaitTrigger, describeTrigger } from './trigger.js';

export const concurrentBackup: FaultKind = {
  name: 'concurrent-backup',
  transports: ['pull', 'push'],
  immediateCleanup: { libvirt: true, files: true },
  // Both commands take about as long to start; started within the first's job time of
  // it, the second looks at the domain while the first's (full, so longest) job runs.
  plan: (rng, timings) => ({
    trigger: { at: 'delay', ms: rng.int(0, timings.jobMs) },
    level: 'full',
    variant: `${rng.pick(['another set', 'the same set'])}, ${rng.pick(['pull', 'push'])}`,
  }),
  describe: (planned) => `second backup of the domain into ${planned.variant} ${describeTrigger(planned.trigger)}`,
  async inject(scene, planned, cli) {
    if (!(await awaitTrigger(planned.trigger, cli))) return { landed: false, detail: 'the backup had ended' };
    const dest = planned.variant.startsWith('the same set') ? scene.setDir : scene.otherSetDir;
    const transport = planned.variant.endsWith('push') ? 'push' : 'pull';
    const outcome = runCli(scene.cli, scene.backupArgs(dest, 'auto', transport), { timeoutMs: 300_000 });
    return { landed: true, detail: `second backup into ${dest === scene.setDir ? 'the same set' : 'another set'}`, others: [{ outcome, dest }] };
  },
  async repair() {},
  // The backup that took the domain first must complete. That is the faulted one, unless
  // the second reached the domain before it did (on a loaded machine a start-up can take
  // longer than the delay): then the faulted one is refused before it begins, and the
  // second must have completed.
  expectedExit(outcome, _injection, _setUnchanged, others) {
    if (outcome.code === 0 && outcome.result !== undefined) return null;
    const refusedBeforeStart = outcome.code === 1 && outcome.error?.['code'] === 'DOMAIN_BUSY' && !outcome.events.some((event) => event.type === 'start');
    if (refusedBeforeStart && others.some((other) => other.code === 0 && other.result !== undefined)) return null;
    return 'exit 0: the backup that took the domain first completes (or, refused before it began, the second completes)';
  },
};
