// Runs every benchmark suite (scripts/bench/*.bench.ts) one after the other, each in
// its own process so one suite's heap and native state cannot skew the next.
// `npm run bench -- nbd` runs only the suites whose file name contains "nbd".
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const filters = process.argv.slice(2);
const suites = readdirSync(here)
  .filter((f) => f.endsWith('.bench.ts'))
  .filter((f) => filters.length === 0 || filters.some((want) => f.includes(want)))
  .sort();

if (suites.length === 0) {
  console.error(`no benchmark suite matches ${filters.join(', ')}`);
  process.exit(2);
}

let failed = 0;
for (const suite of suites) {
  console.log(`\n## ${suite.replace(/\.bench\.ts$/, '')}\n`);
  const result = spawnSync(process.execPath, ['--import=tsx', '--expose-gc', join(here, suite)], {
    stdio: 'inherit',
  });
  if (result.status !== 0) {
    failed++;
    console.error(`suite ${suite} failed (exit ${result.status ?? result.signal})`);
  }
}
process.exit(failed === 0 ? 0 : 1);
