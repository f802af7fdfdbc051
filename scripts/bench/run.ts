// Runs every benchmark suite (scripts/bench/*.bench.ts) one after the other, each in
// its own process so one suite's heap and native state cannot skew the next.
// `npm run bench -- nbd` runs only the suites whose file name contains "nbd".
//
// Each suite runs twice: on the machine as it is, then with a background CPU load
// this runner starts and stops itself (one spinning process per core, at normal
// priority), standing for the other backups and VMs a real host runs. A design
// that wins only on an idle machine has not won. BENCH_LOAD=quiet or loaded runs
// one of the two.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const filters = process.argv.slice(2);
const suites = readdirSync(here)
  .filter((f) => f.endsWith('.bench.ts'))
  .filter((f) => filters.length === 0 || filters.some((want) => f.includes(want)))
  .sort();

const conditions = (() => {
  const wanted = process.env.BENCH_LOAD ?? 'both';
  if (wanted === 'both') return ['quiet', 'loaded'] as const;
  if (wanted === 'quiet' || wanted === 'loaded') return [wanted] as const;
  console.error(`BENCH_LOAD must be quiet, loaded or both, not ${JSON.stringify(wanted)}`);
  process.exit(2);
})();

if (suites.length === 0) {
  console.error(`no benchmark suite matches ${filters.join(', ')}`);
  process.exit(2);
}

/** One busy process per core; they spin until killed. */
function startLoad(): ChildProcess[] {
  return Array.from({ length: availableParallelism() }, () => spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }));
}

function stopLoad(spinners: ChildProcess[]): void {
  for (const spinner of spinners) spinner.kill('SIGKILL');
}

const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');

let failed = 0;
for (const suite of suites) {
  for (const condition of conditions) {
    const spinners = condition === 'loaded' ? startLoad() : [];
    const label = condition === 'loaded' ? `loaded: ${spinners.length} spinning processes` : 'quiet';
    console.log(`\n## ${suite.replace(/\.bench\.ts$/, '')} (${label}; load average ${load()})\n`);
    try {
      const result = spawnSync(process.execPath, ['--import=tsx', '--expose-gc', join(here, suite)], {
        stdio: 'inherit',
        env: { ...process.env, BENCH_CONDITION: condition },
      });
      if (result.status !== 0) {
        failed++;
        console.error(`suite ${suite} (${condition}) failed (exit ${result.status ?? result.signal})`);
      }
    } finally {
      stopLoad(spinners);
    }
    console.log(`\n(load average at the end: ${load()})`);
  }
}
process.exit(failed === 0 ? 0 : 1);
