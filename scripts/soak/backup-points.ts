// Which reference snapshot holds the content of each backup point. Snapshots are
// kept for the newest points only (`window`): they are what a prune keeps, and
// copies of a 256 MiB disk per point add up over a thousand cycles.
import type { MirroredDomain } from './mirrored-domain.js';

export class BackupPoints {
  readonly #snapshotOf = new Map<string, string>();

  constructor(
    private readonly domain: MirroredDomain,
    private readonly window: number,
  ) {}

  add(backupId: string, snapshot: string): void {
    this.#snapshotOf.set(backupId, snapshot);
  }

  /** Points of the set that still have a reference, oldest first. */
  withReference(idsInSet: readonly string[]): Array<{ backupId: string; snapshot: string }> {
    return idsInSet.filter((id) => this.#snapshotOf.has(id)).map((id) => ({ backupId: id, snapshot: this.#snapshotOf.get(id)! }));
  }

  /**
   * Drops the references of points no longer in the set and of all but the newest
   * `window` points, keeping any snapshot listed in `inUse` (the content being backed up).
   */
  async trim(idsInSet: readonly string[], inUse: readonly string[] = []): Promise<void> {
    const keepIds = new Set(idsInSet.filter((id) => this.#snapshotOf.has(id)).slice(-this.window));
    const before = new Set(this.#snapshotOf.values());
    for (const id of [...this.#snapshotOf.keys()]) if (!keepIds.has(id)) this.#snapshotOf.delete(id);
    const still = new Set([...this.#snapshotOf.values(), ...inUse]);
    for (const snapshot of before) if (!still.has(snapshot)) await this.domain.removeSnapshot(snapshot);
  }
}
