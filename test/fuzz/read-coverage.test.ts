// ReadCoverage against the plainest model there is: one flag per byte.
import test from 'ava';
import fc from 'fast-check';
import { ReadCoverage } from '../../src/nbd/read-coverage.js';
import { fuzzRuns, reportCases } from './fuzz-runs.js';

const SIZE = 256;

test('ReadCoverage accepts exactly the ranges that overlap nothing earlier, and counts every byte once', (t) => {
  const startedAt = performance.now();
  const ranges = fc.array(fc.tuple(fc.nat({ max: SIZE - 1 }), fc.integer({ min: 1, max: 64 })), { maxLength: 60 });
  const result = fc.check(
    fc.property(ranges, fc.integer({ min: 1, max: 8 }), (adds, maxPieces) => {
      const coverage = new ReadCoverage(maxPieces);
      const seen = new Uint8Array(SIZE + 64);
      for (const [start, length] of adds) {
        const overlaps = seen.subarray(start, start + length).some((flag) => flag === 1);
        const problem = coverage.add(start, length);
        if (overlaps) {
          if (problem !== 'overlap') throw new Error(`${start}+${length} overlaps, but add said ${String(problem)}`);
          continue;
        }
        if (problem === 'overlap') throw new Error(`${start}+${length} overlaps nothing, but add said overlap`);
        if (problem === 'scattered') {
          // Refused only when it would have made one piece more than allowed.
          const after = seen.slice();
          after.fill(1, start, start + length);
          const pieces = after.reduce((count, flag, i) => count + (flag === 1 && (i === 0 || after[i - 1] === 0) ? 1 : 0), 0);
          if (pieces <= maxPieces) throw new Error(`${start}+${length} refused as scattered with ${pieces} pieces`);
          return;
        }
        seen.fill(1, start, start + length);
        const covered = seen.reduce((sum, flag) => sum + flag, 0);
        if (coverage.covered !== covered) throw new Error(`covered ${coverage.covered}, the bytes say ${covered}`);
      }
    }),
    { numRuns: fuzzRuns(2000, 1) },
  );
  reportCases(t.log.bind(t), 'nbd read coverage', result.numRuns, result.failed ? 1 : 0, startedAt);
  t.false(result.failed, fc.defaultReportMessage(result) ?? '');
});
