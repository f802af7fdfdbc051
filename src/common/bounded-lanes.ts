// Independent asynchronous steps over many items (domains of a run, a chain's files), a
// few at a time: their waits overlap, bounded so a long list cannot use up descriptors.

/**
 * Runs `work` over `items` with at most `lanes` at a time, in order of the list, and
 * returns the results in that order. `work` must not reject: each item's failure is its
 * own result, so one cannot stop the others.
 */
export async function inBoundedLanes<T, R>(items: readonly T[], lanes: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      results[index] = await work(items[index]!);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(lanes, items.length)) }, lane));
  return results;
}

/** `inBoundedLanes` for steps that may reject: the outcomes in the items' order, for the caller to meet as a loop would. */
export function settleBounded<T, R>(items: readonly T[], limit: number, step: (item: T) => Promise<R>): Promise<PromiseSettledResult<R>[]> {
  return inBoundedLanes(items, limit, (item) =>
    step(item).then(
      (value): PromiseSettledResult<R> => ({ status: 'fulfilled', value }),
      (reason: unknown): PromiseSettledResult<R> => ({ status: 'rejected', reason }),
    ),
  );
}
