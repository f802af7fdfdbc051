// The shipped declarations (lib/*.d.ts, built by `npm test` before the tests run) show
// the public surface only: what is marked @internal stays out of users' editors.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import test from 'ava';

const LIB = fileURLToPath(new URL('../../lib/', import.meta.url));

async function declarationFiles(dir: string): Promise<string[]> {
  const files: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) files.push(...(await declarationFiles(path)));
    else if (entry.name.endsWith('.d.ts')) files.push(path);
  }
  return files;
}

test('no @internal member reaches the shipped declarations', async (t) => {
  const files = await declarationFiles(LIB);
  t.true(files.length > 10, `declarations found in ${LIB}: run npm run build:ts first`);
  for (const file of files) {
    const text = await readFile(file, 'utf8');
    t.false(text.includes('@internal'), `${file} declares an @internal member`);
  }
});
