// `npm run soak -- cycles [--cycles N]` and `npm run soak -- faults [--runs N]`:
// long randomized runs of the command against a real libvirtd, checking after each
// step what the product promises. The seed comes first in the output; the same seed
// makes the same choices again.
//
// Options: --seed S, --json (the report as JSON on stdout), --emulate (plain QEMU
// emulation even where KVM exists, as on CI hosts without /dev/kvm), --from-sources
// (run the command through tsx instead of lib/), --keep-work, --max-failures N,
// cycles: --prune-every N; faults: --kinds sigkill,sigterm,...
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import type { CliBuild } from './cli-process.js';
import { ensureCompiled } from './compiled-cli.js';
import { currentMountNamespace, KEPT_MARK, OUTER_NAMESPACE_VARIABLE, PrivateLibvirtd, sweepStaleDaemons } from './private-libvirtd.js';
import { runCyclesSuite } from './cycles-suite.js';
import { SoakReport, type SuiteName } from './report.js';
import { freshSeed, parseSeed } from './seeded-random.js';
import { makeDirs, type SuiteContext } from './suite-context.js';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SUITES: readonly SuiteName[] = ['cycles', 'faults'];
/** On disk, not tmpfs: backups and references of a long soak take gigabytes. */
const WORK_PARENT = '/var/tmp';

function usage(message: string): never {
  process.stderr.write(
    `${message}\nusage: npm run soak -- cycles [--cycles N] [--prune-every N] | faults [--runs N] [--kinds a,b]  [--seed S] [--json] [--emulate] [--from-sources] [--keep-work] [--max-failures N]\n`,
  );
  process.exit(2);
}

function positiveInteger(text: string | undefined, option: string, fallback: number): number {
  if (text === undefined) return fallback;
  if (!/^\d+$/.test(text) || Number(text) < 1) usage(`--${option} takes a whole number of at least 1, got '${text}'`);
  return Number(text);
}

const { values, positionals } = (() => {
  try {
    return parseArgs({
      args: process.argv.slice(2),
      allowPositionals: true,
      options: {
        cycles: { type: 'string' },
        runs: { type: 'string' },
        seed: { type: 'string' },
        'prune-every': { type: 'string' },
        kinds: { type: 'string' },
        json: { type: 'boolean' },
        emulate: { type: 'boolean' },
        'from-sources': { type: 'boolean' },
        'keep-work': { type: 'boolean' },
        'max-failures': { type: 'string' },
      },
    });
  } catch (error) {
    usage((error as Error).message);
  }
})();

const suite = positionals[0] as SuiteName | undefined;
if (suite === undefined || !SUITES.includes(suite) || positionals.length > 1) usage(`a suite is required: ${SUITES.join(' or ')}`);
if (process.getuid?.() !== 0) usage('the soak needs root: it starts a libvirtd of its own, in a mount namespace of its own, and mounts file systems');

let seed: number;
try {
  seed = values.seed === undefined ? freshSeed() : parseSeed(values.seed);
} catch (error) {
  usage((error as Error).message);
}

// Both suites run against a libvirtd of their own, in a mount namespace of their own:
// the faults suite kills it and mounts file systems, and neither should depend on the
// state a daemon shared with other work is in, nor disturb that work.
if (process.env[OUTER_NAMESPACE_VARIABLE] === undefined) {
  // Ctrl-C reaches both processes; the copy inside decides how to stop.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => undefined);
  const child = spawnSync(
    'unshare',
    [
      '--mount',
      '--propagation',
      'private',
      '--',
      process.execPath,
      ...process.execArgv,
      fileURLToPath(import.meta.url),
      ...process.argv.slice(2),
      '--seed',
      String(seed),
    ],
    {
      stdio: 'inherit',
      env: { ...process.env, [OUTER_NAMESPACE_VARIABLE]: await currentMountNamespace() },
    },
  );
  process.exit(child.status ?? 1);
}

const say = (line: string) => process.stderr.write(`${line}\n`);
const build: CliBuild = values['from-sources'] ? 'sources' : 'lib';
const settings: Record<string, unknown> =
  suite === 'cycles'
    ? { cycles: positiveInteger(values.cycles, 'cycles', 1000), pruneEvery: positiveInteger(values['prune-every'], 'prune-every', 50) }
    : { runs: positiveInteger(values.runs, 'runs', 100), ...(values.kinds ? { kinds: values.kinds.split(',') } : {}) };
settings['build'] = build;
settings['virtualization'] = values.emulate ? 'qemu (forced)' : 'auto';
const report = new SoakReport(suite, seed, settings);

say(`soak ${suite}: seed ${seed}`);
if (build === 'lib') await ensureCompiled(REPO_ROOT, say);
await sweepStaleDaemons(WORK_PARENT, say);
const workDir = await mkdtemp(join(WORK_PARENT, `lvb-soak-${suite}-${process.pid}-`));
const dirs = await makeDirs(workDir, ['cli-tmp', 'cli-run', 'daemon']);
const daemon = await PrivateLibvirtd.start(dirs['daemon']!);
const context: SuiteContext = {
  seed,
  report,
  workDir,
  cli: { repoRoot: REPO_ROOT, build, tmpDir: dirs['cli-tmp']!, runDir: dirs['cli-run']! },
  virtualization: values.emulate ? 'qemu' : 'auto',
  maxFailures: positiveInteger(values['max-failures'], 'max-failures', 20),
  say,
  stop: { requested: false },
  daemon,
};
// A first signal lets the current cycle or run finish, then cleans up (the domain, the
// private libvirtd) and reports; a second one exits at once.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (context.stop.requested) process.exit(130);
    context.stop.requested = true;
    say(`${signal}: stopping after the current step (again to exit at once)`);
  });
}

let crashed: unknown;
try {
  if (suite === 'cycles') {
    await runCyclesSuite(context, { cycles: settings['cycles'] as number, pruneEvery: settings['pruneEvery'] as number, modelCheckEvery: 10 });
  } else {
    const { runFaultsSuite } = await import('./faults-suite.js');
    await runFaultsSuite(context, { runs: settings['runs'] as number, kinds: settings['kinds'] as string[] | undefined });
  }
} catch (error) {
  crashed = error;
} finally {
  await daemon.stop().catch((error: unknown) => say(`stopping the private libvirtd failed: ${String(error)}`));
}

if (crashed !== undefined) {
  say(`the soak itself failed (seed ${seed}): ${crashed instanceof Error ? (crashed.stack ?? crashed.message) : String(crashed)}`);
  report.notes.push(`the soak stopped early: ${crashed instanceof Error ? crashed.message : String(crashed)}`);
}
const failed = crashed !== undefined || report.failures.length > 0;
if (failed || values['keep-work']) {
  await writeFile(join(workDir, KEPT_MARK), `seed ${seed}\n`);
  say(`work directory kept: ${workDir}`);
} else {
  await rm(workDir, { recursive: true, force: true });
}
process.stdout.write(values.json ? `${JSON.stringify(report.toJson(), null, 2)}\n` : `${report.toText()}\n`);
process.exit(failed ? 1 : 0);
