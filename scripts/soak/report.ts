import { formatBytes } from '../../src/common/format-bytes.js';
// What a soak run found: counts for the summary (and the README), and every
// failure with what is needed to replay it.
import type { CheckFailure } from './invariants.js';

export type SuiteName = 'cycles' | 'faults';

export interface SoakFailure extends CheckFailure {
  /** "cycle 17", "run 5, recovery backup". */
  where: string;
  /** The fault of that run and when it was injected, if any. */
  fault?: string;
  /** Every check that step ran, so "what was checked" is on record. */
  checked: string[];
}

export interface FaultTally {
  injected: number;
  /** Injected while the backup was still running (the rest came after it ended). */
  landed: number;
}

export class SoakReport {
  readonly startedAt = Date.now();
  cycles = 0;
  runs = 0;
  backups = 0;
  restores = 0;
  prunes = 0;
  guestWrites = 0;
  guestBytesWritten = 0;
  bytesCompared = 0;
  mismatches = 0;
  checks = 0;
  readonly faults: Record<string, FaultTally> = {};
  readonly failures: SoakFailure[] = [];
  /** Things worth knowing that are not failures (a fallback to a full backup, a fault that came too late). */
  readonly notes: string[] = [];

  constructor(
    readonly suite: SuiteName,
    readonly seed: number,
    readonly settings: Record<string, unknown>,
  ) {}

  countFault(kind: string, landed: boolean): void {
    const tally = (this.faults[kind] ??= { injected: 0, landed: 0 });
    tally.injected += 1;
    if (landed) tally.landed += 1;
  }

  failuresByCheck(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const failure of this.failures) counts[failure.check] = (counts[failure.check] ?? 0) + 1;
    return counts;
  }

  get wallTimeMs(): number {
    return Date.now() - this.startedAt;
  }

  toJson(): object {
    return {
      suite: this.suite,
      seed: this.seed,
      settings: this.settings,
      cycles: this.cycles,
      runs: this.runs,
      backups: this.backups,
      restores: this.restores,
      prunes: this.prunes,
      guestWrites: this.guestWrites,
      guestBytesWritten: this.guestBytesWritten,
      bytesCompared: this.bytesCompared,
      mismatches: this.mismatches,
      checks: this.checks,
      faults: this.faults,
      failures: this.failures.length,
      failuresByCheck: this.failuresByCheck(),
      failureDetails: this.failures,
      notes: this.notes,
      wallTimeMs: this.wallTimeMs,
    };
  }

  toText(): string {
    const lines = [
      `soak ${this.suite}, seed ${this.seed}: ${this.failures.length === 0 ? 'no failure' : `${this.failures.length} FAILURE${this.failures.length === 1 ? '' : 'S'}`}`,
    ];
    if (this.suite === 'cycles') lines.push(`  cycles          ${this.cycles}`);
    if (this.suite === 'faults') {
      lines.push(`  runs            ${this.runs}`);
      const kinds = Object.entries(this.faults).sort(([a], [b]) => a.localeCompare(b));
      for (const [kind, tally] of kinds)
        lines.push(`    ${kind.padEnd(22)}${String(tally.injected).padStart(4)} injected, ${tally.landed} while the backup ran`);
    }
    lines.push(
      `  backups         ${this.backups}`,
      `  restores        ${this.restores}`,
      `  prunes          ${this.prunes}`,
      `  guest writes    ${this.guestWrites} (${formatBytes(this.guestBytesWritten)})`,
      `  bytes compared  ${this.bytesCompared} (${formatBytes(this.bytesCompared)})`,
      `  mismatches      ${this.mismatches}`,
      `  checks          ${this.checks}`,
      `  failures        ${this.failures.length}${
        this.failures.length > 0
          ? ` (${Object.entries(this.failuresByCheck())
              .map(([check, n]) => `${check}: ${n}`)
              .join(', ')})`
          : ''
      }`,
      `  wall time       ${(this.wallTimeMs / 1000).toFixed(1)} s`,
    );
    if (this.notes.length > 0) {
      lines.push('', 'notes (not failures):');
      for (const note of this.notes.slice(0, 20)) lines.push(`  ${note}`);
      if (this.notes.length > 20) lines.push(`  ... and ${this.notes.length - 20} more (--json lists them all)`);
    }
    if (this.failures.length > 0) {
      lines.push('', 'failures:');
      for (const failure of this.failures) lines.push(`  ${failure.where}${failure.fault ? ` [${failure.fault}]` : ''}: ${failure.check}: ${failure.actual}`);
      lines.push(
        '',
        `replay with: npm run soak -- ${this.suite} --seed ${this.seed} ${Object.entries(this.settings)
          .filter(([key]) => key === 'cycles' || key === 'runs')
          .map(([key, value]) => `--${key} ${String(value)}`)
          .join(' ')}`,
      );
    }
    return lines.join('\n');
  }
}

/** The full account of one failure, printed when it happens. */
export function formatFailure(suite: SuiteName, seed: number, failure: SoakFailure): string {
  return [
    `FAILURE in soak ${suite}, seed ${seed}, ${failure.where}${failure.fault ? `, fault: ${failure.fault}` : ''}`,
    `  check:    ${failure.check}`,
    `  expected: ${failure.expected}`,
    `  actual:   ${failure.actual}`,
    `  checked at this step: ${failure.checked.join(', ')}`,
    ...(failure.output
      ? [
          failure.output
            .split('\n')
            .map((line) => `  | ${line}`)
            .join('\n'),
        ]
      : []),
  ].join('\n');
}
