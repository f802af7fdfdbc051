// The public API is what api/public-api.txt says, no more and no less: moving files or
// reformatting must leave it alone, and a change to it is made on purpose, by running
// `npm run api:update` and committing the new report with the change.
import { readFile } from 'node:fs/promises';

import test from 'ava';

import { REPORT_PATH, apiReport } from '../../scripts/api-report.js';

test('the public API matches the committed report', async (t) => {
  const committed = await readFile(REPORT_PATH, 'utf8');
  const current = apiReport();
  const before = committed.split('\n');
  const after = current.split('\n');
  const changes = [...before.filter((line) => !after.includes(line)).map((line) => `- ${line}`), ...after.filter((line) => !before.includes(line)).map((line) => `+ ${line}`)];
  t.deepEqual(changes, [], 'the public API changed (run npm run api:update if that is deliberate)');
  t.is(current, committed, 'same lines, other order: run npm run api:update if that is deliberate');
});
