// Random data for `write -s`: a few files of pseudo-random bytes, derived from the
// seed so a replayed run writes the same bytes.
import { createCipheriv } from 'node:crypto';
import { open } from 'node:fs/promises';
import { join } from 'node:path';

import { MAX_WRITE_BYTES } from './guest-writes.js';

const CHUNK = 4 * 1024 * 1024;

export async function createWriteSources(dir: string, seed: number, count: number): Promise<string[]> {
  const paths: string[] = [];
  for (let index = 0; index < count; index += 1) {
    const key = Buffer.alloc(16);
    key.writeUInt32LE(seed, 0);
    key.writeUInt32LE(index, 4);
    // AES-CTR over zeroes is a fast keyed stream of random-looking bytes.
    const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
    const zeroes = Buffer.alloc(CHUNK);
    const path = join(dir, `source-${index}.bin`);
    const file = await open(path, 'w');
    try {
      for (let written = 0; written < MAX_WRITE_BYTES; written += CHUNK) await file.write(cipher.update(zeroes));
    } finally {
      await file.close();
    }
    paths.push(path);
  }
  return paths;
}
