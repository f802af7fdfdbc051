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
