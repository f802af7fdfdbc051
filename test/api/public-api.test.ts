// The public API is what api/public-api.txt says, no more and no less: moving files or
// reformatting must leave it alone, and a change to it is made on purpose, by running
// `npm run api:update` and committing the new report with the change.
import { readFile } from 'node:fs/promises';

import test from 'ava';

import { REPORT_PATH, apiReport } from '../../scripts/api-report.js';

test('the public API matches the committed report', async (t) => {
  const committed = await readFile(REPORT_PATH, 'utf8');
  const current = apiReport();
  if (current === committed) {
    t.pass();
    return;
  }
  const before = committed.split('\n');
  const after = current.split('\n');
  const removed = before.filter((line) => !after.includes(line)).map((line) => `- ${line}`);
  const added = after.filter((line) => !before.includes(line)).map((line) => `+ ${line}`);
  t.fail(`the public API changed (run npm run api:update if that is deliberate):\n${[...removed, ...added].slice(0, 80).join('\n')}`);
});
