/**
 * The bytes of one READ that the server's replies have described so far.
 *
 * Content chunks may come in any order, but none may overlap another (proto.md: "MUST
 * NOT send content chunks that overlap"): a byte described twice would let the total
 * reach the request's length while another byte was never sent, and the caller would
 * get whatever the memory held before. So ranges are tracked, not just counted.
 */

/**
 * Separate pieces a read may be in at once. Servers answer in offset order, which keeps
 * one piece; this only bounds the bookkeeping a server scattering tiny chunks can cause.
 */
export const MAX_READ_PIECES = 4096;

export type CoverageProblem = 'overlap' | 'scattered';

export class ReadCoverage {
  /** Bytes described so far; never counts a byte twice. */
  covered = 0;
  /** Disjoint, non-adjacent ranges [starts[i], ends[i]) in offset order. */
  private readonly starts: number[] = [];
  private readonly ends: number[] = [];

  constructor(private readonly maxPieces = MAX_READ_PIECES) {}

  /** Records `length` (> 0) bytes at `start`; says what is wrong instead when it cannot. */
  add(start: number, length: number): CoverageProblem | undefined {
    const end = start + length;
    const { starts, ends } = this;
    const count = starts.length;
    const lastEnd = count > 0 ? ends[count - 1]! : -1;
    if (start >= lastEnd) {
      // In offset order: the usual case, no search.
      if (start === lastEnd) ends[count - 1] = end;
      else if (count >= this.maxPieces) return 'scattered';
      else {
        starts.push(start);
        ends.push(end);
      }
      this.covered += length;
      return undefined;
    }
    // The first range that ends at or after `start`; one exists, the last one does.
    let low = 0;
    let high = count - 1;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (ends[middle]! >= start) high = middle;
      else low = middle + 1;
    }
    if (starts[low]! < end && ends[low]! > start) return 'overlap';
    if (ends[low] === start) {
      // Extends range `low` to the right, possibly up to the next one.
      const next = low + 1;
      if (next < count && starts[next]! < end) return 'overlap';
      if (next < count && starts[next] === end) {
        ends[low] = ends[next]!;
        starts.splice(next, 1);
        ends.splice(next, 1);
      } else {
        ends[low] = end;
      }
    } else if (starts[low] === end) {
      // Lies just before range `low` (the one before it ends before `start`).
      starts[low] = start;
    } else if (count >= this.maxPieces) {
      return 'scattered';
    } else {
      starts.splice(low, 0, start);
      ends.splice(low, 0, end);
    }
    this.covered += length;
    return undefined;
  }
}
