// Where the time of a cycle or run goes, for its progress line: the soak must fit
// its time budget on a loaded two-core machine, and this says what to shrink.
export class PhaseTimer {
  #last = Date.now();
  readonly #phases: Array<[string, number]> = [];

  /** Ends the current phase under `name`. */
  mark(name: string): void {
    const now = Date.now();
    const existing = this.#phases.find(([phase]) => phase === name);
    if (existing) existing[1] += now - this.#last;
    else this.#phases.push([name, now - this.#last]);
    this.#last = now;
  }

  toString(): string {
    return this.#phases.map(([name, ms]) => `${name} ${(ms / 1000).toFixed(1)}`).join(', ');
  }
}
