// Independent asynchronous steps over many items (a chain's files), a few at a time:
// in parallel their waits overlap, bounded so a long chain cannot use up descriptors.

/** `step` over every item, at most `limit` at once; the outcomes in the items' order, for the caller to meet as a loop would. */
export async function settleBounded<T, R>(items: readonly T[], limit: number, step: (item: T) => Promise<R>): Promise<PromiseSettledResult<R>[]> {
  const outcomes: PromiseSettledResult<R>[] = new Array<PromiseSettledResult<R>>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      try {
        outcomes[index] = { status: 'fulfilled', value: await step(items[index]!) };
      } catch (reason) {
        outcomes[index] = { status: 'rejected', reason };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return outcomes;
}
