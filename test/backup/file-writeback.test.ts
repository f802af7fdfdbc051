// Write-back as a file is written: ranges well behind the writer are on disk and out of
// the page cache (fincore counts what stays resident), file systems or files that
// cannot do it fall back to the final fsync, and bad arguments are TypeErrors.
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { FileWriteback } from '../../src/backup/file-writeback.js';
import { addon } from '../../src/native.js';
import { run } from '../helpers/process.js';

const MiB = 2 ** 20;

async function residentBytes(path: string): Promise<number> {
  const out = await run('fincore', ['--bytes', '--noheadings', '--output', 'RES', path]);
  return Number(out.trim());
}

test('ranges a window behind the writer leave the page cache; the file reads back intact', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'lvb-writeback-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'data');
  const file = await open(path, 'wx');
  const writeback = new FileWriteback(file.fd);
  const block = Buffer.alloc(8 * MiB);
  const total = 160 * MiB;
  for (let offset = 0; offset < total; offset += block.length) {
    block.fill(offset / block.length + 1);
    await file.write(block, 0, block.length, offset);
    writeback.landed(offset, block.length);
  }
  await writeback.drain();
  await file.sync();
  await file.close();
  // At most the window (64 MiB) plus a block stays cached; written without write-back,
  // all 160 MiB would be.
  const resident = await residentBytes(path);
  t.true(resident <= 72 * MiB, `${resident / MiB} MiB still cached`);
  const check = await open(path, 'r');
  t.teardown(() => check.close());
  for (let offset = 0; offset < total; offset += block.length) {
    const { bytesRead } = await check.read(block, 0, block.length, offset);
    t.is(bytesRead, block.length);
    if (!block.every((byte) => byte === offset / block.length + 1)) t.fail(`wrong bytes in block at ${offset}`);
  }
});

test('a file that cannot do write-back (a pipe) falls back quietly; the native call says why', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'lvb-writeback-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await run('mkfifo', [join(dir, 'fifo')]);
  // O_RDWR so opening a FIFO does not wait for a reader.
  const fifo = await open(join(dir, 'fifo'), 'r+');
  t.teardown(() => fifo.close());
  const error = await t.throwsAsync(addon.startWriteback(fifo.fd, 0, 4096));
  t.is((error as NodeJS.ErrnoException).code, 'ESPIPE');
  t.is((error as NodeJS.ErrnoException).syscall, 'sync_file_range');
  const writeback = new FileWriteback(fifo.fd);
  for (let i = 0; i < 20; i++) writeback.landed(i * 8 * MiB, 8 * MiB);
  await t.notThrowsAsync(writeback.drain());
});

test('a bad file descriptor is an error with its errno name', async (t) => {
  const error = await t.throwsAsync(addon.finishWriteback(987654, 0, 4096, true));
  t.is((error as NodeJS.ErrnoException).code, 'EBADF');
  const writeback = new FileWriteback(987654);
  writeback.landed(0, 4096);
  await t.throwsAsync(writeback.drain(), { message: /^sync_file_range: Bad file descriptor$/ });
});

test('arguments are checked before anything runs', (t) => {
  t.throws(() => addon.startWriteback('3' as never, 0, 1), { instanceOf: TypeError, message: 'The "fd" argument must be a number' });
  t.throws(() => addon.startWriteback(3, -1, 1), { instanceOf: TypeError, message: 'The "offset" argument must be a non-negative integer' });
  t.throws(() => addon.finishWriteback(3, 0, 1.5, true), { instanceOf: TypeError, message: 'The "length" argument must be a non-negative integer' });
  t.throws(() => (addon.startWriteback as (...args: unknown[]) => unknown)(3, 0), { instanceOf: TypeError, message: 'The "length" argument must be a number' });
});
