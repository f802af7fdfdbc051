// Page-aligned buffers: the kernel accepts them where it demands alignment (an O_DIRECT
// read fails with EINVAL into memory that is not aligned), each one is its own memory.
import { constants } from 'node:fs';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { pageAlignedBuffers } from '../../src/common/page-aligned.js';

test('an O_DIRECT read lands in each buffer; it is refused in memory one byte off', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'lvb-page-aligned-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'data');
  const data = Buffer.alloc(3 * 65536);
  for (let index = 0; index < data.length; index++) data[index] = (index * 7) % 251;
  await writeFile(path, data);
  const file = await open(path, constants.O_RDONLY | constants.O_DIRECT);
  t.teardown(() => file.close());

  const buffers = pageAlignedBuffers(3, 100_000);
  t.deepEqual(
    buffers.map((buffer) => buffer.length),
    [100_000, 100_000, 100_000],
  );
  for (const [index, buffer] of buffers.entries()) {
    const { bytesRead } = await file.read(buffer, 0, 65536, index * 65536);
    t.is(bytesRead, 65536);
  }
  // Each buffer holds what was read into it: none overlaps another.
  for (const [index, buffer] of buffers.entries()) t.true(buffer.subarray(0, 65536).equals(data.subarray(index * 65536, (index + 1) * 65536)));

  const error = (await t.throwsAsync(file.read(buffers[0]!.subarray(1), 0, 65536, 0))) as NodeJS.ErrnoException;
  t.is(error.code, 'EINVAL');
});

test('bad counts and sizes are refused with what was wrong', (t) => {
  t.deepEqual(pageAlignedBuffers(0, 4096), []);
  t.throws(() => pageAlignedBuffers(-1, 4096), { instanceOf: RangeError, message: 'count must be a non-negative integer, got -1' });
  t.throws(() => pageAlignedBuffers(1, 0), { instanceOf: RangeError, message: 'bytes must be a positive integer, got 0' });
  t.throws(() => pageAlignedBuffers(1, 1.5), { instanceOf: RangeError, message: 'bytes must be a positive integer, got 1.5' });
});
