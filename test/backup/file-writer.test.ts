// The native FileWriter: concurrent positioned writes whose checksum still follows
// issue order (checked against xxhsum), ranges a window behind the writer on disk and
// out of the page cache (fincore counts what stays resident), files that cannot do
// write-back falling back to fsync, and errors that say which system call failed.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdtemp, open, readdir, readFile, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { pageAlignedBuffers } from '../../src/common/page-aligned.js';
import { nativeAddon } from '../../src/libvirt/native.js';
import { run } from '../helpers/process.js';

const addon = nativeAddon();

const MiB = 2 ** 20;

async function tempFile(t: ExecutionContext, name: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'lvb-file-writer-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return join(dir, name);
}

async function xxhsum(path: string): Promise<string> {
  return (await run('xxhsum', ['-H2', path])).split(/\s/)[0]!;
}

test('160 MiB in 8 MiB writes: intact on disk, checksum as xxhsum, evicted from the page cache', async (t) => {
  const path = await tempFile(t, 'data');
  const file = await open(path, 'wx');
  t.teardown(() => file.close());
  const writer = new addon.FileWriter(file.fd);
  const blocks: Buffer[] = [];
  const writes: Array<Promise<void>> = [];
  for (let i = 0; i < 20; i++) {
    const block = Buffer.alloc(8 * MiB, i + 1);
    blocks.push(block);
    // Each write is several pieces, as the qcow2 writer hands them over.
    writes.push(writer.write([block.subarray(0, 3 * MiB + 5), block.subarray(3 * MiB + 5)], i * 8 * MiB));
    if (writes.length >= 4) await writes.shift();
  }
  await Promise.all(writes);
  const digest = await writer.finish();
  // Everything was written back and dropped; without that all 160 MiB would be cached.
  const resident = Number((await run('fincore', ['--bytes', '--noheadings', '--output', 'RES', path])).trim());
  t.true(resident <= 8 * MiB, `${resident / MiB} MiB cached`);
  t.is(digest, await xxhsum(path));
  t.true((await readFile(path)).equals(Buffer.concat(blocks)));
});

test('a hole between writes is hashed as zeroes and left unwritten: the checksum is xxhsum of the sparse file', async (t) => {
  const path = await tempFile(t, 'holed');
  const file = await open(path, 'wx');
  t.teardown(() => file.close());
  const writer = new addon.FileWriter(file.fd);
  const head = randomBytes(MiB);
  const tail = randomBytes(MiB);
  const writes = [writer.write([head], 0), writer.hashHole(64 * MiB + 512), writer.write([tail], 65 * MiB + 512)];
  await Promise.all(writes);
  const digest = await writer.finish();
  t.is(digest, await xxhsum(path));
  const size = await file.stat();
  t.is(size.size, 66 * MiB + 512);
  t.true(size.blocks * 512 < 4 * MiB, `${size.blocks * 512} bytes allocated`);
  t.throws(() => writer.hashHole(1), { message: /hashHole\(\) after finish\(\)/ });
});

test('many small concurrent writes: the checksum follows issue order, not completion order', async (t) => {
  const path = await tempFile(t, 'small');
  const file = await open(path, 'wx');
  t.teardown(() => file.close());
  const writer = new addon.FileWriter(file.fd);
  const data = randomBytes(3 * MiB + 333);
  const writes: Array<Promise<void>> = [];
  let position = 0;
  for (let i = 0; position < data.length; i++) {
    const length = Math.min(((i * 7919) % 50_000) + 1, data.length - position);
    writes.push(writer.write([data.subarray(position, position + length)], position));
    position += length;
  }
  await Promise.all(writes);
  t.is(await writer.finish(), await xxhsum(path));
  t.true((await readFile(path)).equals(data));
});

async function residentBytes(path: string): Promise<number> {
  return Number((await run('fincore', ['--bytes', '--noheadings', '--output', 'RES', path])).trim());
}

/** This process's descriptors open on `path`. */
async function descriptorsOf(path: string): Promise<number> {
  let count = 0;
  for (const fd of await readdir('/proc/self/fd')) {
    if ((await readlink(`/proc/self/fd/${fd}`).catch(() => '')) === path) count++;
  }
  return count;
}

test('given an O_DIRECT descriptor, aligned writes bypass the page cache and unaligned ones go through it; all land, checksum as xxhsum', async (t) => {
  const path = await tempFile(t, 'direct');
  const file = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_DIRECT, 0o600);
  t.teardown(() => file.close());
  const expected = Buffer.alloc(48 * MiB + 2 * 4096 + 5000 + 4096 + 1000);
  const writer = new addon.FileWriter(file.fd);
  // A second descriptor of the file, without O_DIRECT, for what cannot go straight to the disk.
  t.is(await descriptorsOf(path), 2);

  const aligned = pageAlignedBuffers(6, 8 * MiB);
  const writes: Array<Promise<void>> = [];
  aligned.forEach((buffer, index) => {
    buffer.fill(index + 1);
    buffer.copy(expected, index * 8 * MiB);
    writes.push(writer.write([buffer.subarray(0, 4 * MiB), buffer.subarray(4 * MiB)], index * 8 * MiB));
  });
  // Then, front to back: aligned position and length from memory that is not aligned,
  // an unaligned length, an unaligned position.
  const unalignedMemory = Buffer.alloc(2 * 4096 + 1, 0xee).subarray(1);
  const unalignedLength = randomBytes(5000);
  const unalignedPosition = randomBytes(4096 + 1000);
  let position = 48 * MiB;
  for (const buffer of [unalignedMemory, unalignedLength, unalignedPosition]) {
    buffer.copy(expected, position);
    writes.push(writer.write([buffer], position));
    position += buffer.length;
  }
  await Promise.all(writes);

  // Before finish() nothing has been evicted: only the unaligned writes are cached (a plain descriptor caches all 50 MiB).
  const resident = await residentBytes(path);
  t.true(resident > 0 && resident <= 64 * 1024, `${resident} bytes cached`);
  const digest = await writer.finish();
  t.is(await descriptorsOf(path), 1);
  t.is(digest, await xxhsum(path));
  t.true((await readFile(path)).equals(expected));
});

test('the same aligned writes through a plain descriptor are cached until finish() evicts them', async (t) => {
  const path = await tempFile(t, 'buffered');
  const file = await open(path, 'wx');
  t.teardown(() => file.close());
  const writer = new addon.FileWriter(file.fd);
  t.is(await descriptorsOf(path), 1);
  const aligned = pageAlignedBuffers(6, 8 * MiB);
  await Promise.all(aligned.map((buffer, index) => writer.write([buffer.fill(index + 1)], index * 8 * MiB)));
  t.true((await residentBytes(path)) >= 40 * MiB);
  await writer.finish();
  t.true((await residentBytes(path)) <= 8 * MiB);
});

test('a file without write-back (/dev/null) still takes writes; its fsync failure is reported', async (t) => {
  const devNull = await open('/dev/null', 'w');
  t.teardown(() => devNull.close());
  const writer = new addon.FileWriter(devNull.fd);
  for (let i = 0; i < 12; i++) await writer.write([Buffer.alloc(8 * MiB)], i * 8 * MiB);
  const error = (await t.throwsAsync(writer.finish())) as NodeJS.ErrnoException;
  t.is(error.code, 'EINVAL');
  t.is(error.syscall, 'fsync');
  t.is(error.message, 'fsync: Invalid argument');
});

test('a failed write rejects with the errno name, and finish() reports it again', async (t) => {
  const writer = new addon.FileWriter(987654);
  const error = (await t.throwsAsync(writer.write([Buffer.alloc(4096)], 0))) as NodeJS.ErrnoException;
  t.is(error.code, 'EBADF');
  t.is(error.syscall, 'pwritev');
  await t.throwsAsync(writer.finish(), { code: 'EBADF', message: 'pwritev: Bad file descriptor' });
});

test('misuse and bad arguments are refused before anything runs', async (t) => {
  t.throws(() => new addon.FileWriter('3' as never), { instanceOf: TypeError, message: 'The "fd" argument must be a number' });
  t.throws(() => new addon.FileWriter(-1), { instanceOf: TypeError, message: 'The "fd" argument must be a non-negative integer' });
  t.throws(() => (addon.FileWriter as unknown as (fd: number) => void)(3), { instanceOf: TypeError });
  const path = await tempFile(t, 'misuse');
  const file = await open(path, 'wx');
  t.teardown(() => file.close());
  const writer = new addon.FileWriter(file.fd);
  t.throws(() => writer.write(Buffer.alloc(1) as never, 0), { instanceOf: TypeError, message: 'The "buffers" argument must be an array of Uint8Arrays' });
  t.throws(() => writer.write(['x'] as never, 0), { instanceOf: TypeError, message: 'The "buffers" argument must be an array of Uint8Arrays' });
  t.throws(() => writer.write([Buffer.alloc(1)], 1.5), { instanceOf: TypeError, message: 'The "position" argument must be a non-negative integer' });
  t.throws(() => (writer.write as (...args: unknown[]) => unknown)([Buffer.alloc(1)]), {
    instanceOf: TypeError,
    message: 'The "position" argument must be a number',
  });
  t.throws(() => addon.FileWriter.prototype.finish.call({}), { instanceOf: TypeError, message: 'Illegal invocation: receiver is not a FileWriter' });
  // A refused call took no place in the checksum order: later writes still complete.
  const pending = writer.write([Buffer.from('abc')], 0);
  t.throws(() => writer.finish(), { message: 'FileWriter: finish() while writes are in flight' });
  await pending;
  t.is(await writer.finish(), await xxhsum(path));
  t.throws(() => writer.finish(), { message: 'FileWriter: finish() called twice' });
  t.throws(() => writer.write([Buffer.alloc(1)], 3), { message: 'FileWriter: write() after finish()' });
});
