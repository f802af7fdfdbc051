import test from 'ava';
import { settleBounded } from '../../src/common/bounded-lanes.js';

test('outcomes come back in the items order, failures included, never more than the limit at once', async (t) => {
  let running = 0;
  let most = 0;
  const items = Array.from({ length: 20 }, (_, index) => index);
  const outcomes = await settleBounded(items, 3, async (item) => {
    running += 1;
    most = Math.max(most, running);
    // Later items finish first: the order of the outcomes is the items', not the finishing order.
    await new Promise((resolve) => setTimeout(resolve, 20 - item));
    running -= 1;
    if (item % 7 === 3) throw new Error(`item ${item}`);
    return item * 2;
  });
  t.is(most, 3);
  t.deepEqual(
    outcomes.map((outcome) => (outcome.status === 'fulfilled' ? outcome.value : (outcome.reason as Error).message)),
    items.map((item) => (item % 7 === 3 ? `item ${item}` : item * 2)),
  );
});

test('no items, and a limit larger than the items, are fine', async (t) => {
  t.deepEqual(await settleBounded([], 4, async () => 1), []);
  t.deepEqual(await settleBounded(['a'], 8, async (item) => item.toUpperCase()), [{ status: 'fulfilled', value: 'A' }]);
});
