/**
 * How many cases a fuzz target runs: `FUZZ_RUNS` (the full run, `npm run fuzz`) scaled
 * by the target's cost, or a CI-sized default that keeps every target well under a
 * minute on two cores.
 */
export function fuzzRuns(ciDefault: number, scale = 1): number {
  const wanted = Number(process.env['FUZZ_RUNS']);
  if (!Number.isFinite(wanted) || wanted <= 0) return ciDefault;
  return Math.max(1, Math.round(wanted * scale));
}

/** One line per target, the same in the ava log and on the console. */
export function reportCases(log: (message: string) => void, target: string, cases: number, failures: number, startedAt: number): void {
  const line = `${target}: ${cases} cases, ${failures} failures (${((performance.now() - startedAt) / 1000).toFixed(1)} s)`;
  log(line);
  console.log(line);
}
