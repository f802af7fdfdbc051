import test, { type ExecutionContext } from 'ava';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BASE_ALLOCATION, NbdClient, NbdError, TransmissionFlags, type Extent } from '../../src/nbd/index.js';
import { freePort, nbdinfoMap, run, startQemuNbd, status, tempDir, unixUri } from './helpers.js';

const MiB = 1024 * 1024;
const BITMAP = 'bm0';
const DIRTY_CONTEXT = `qemu:dirty-bitmap:${BITMAP}`;
const EXPORT = 'disk0';

/** A qcow2 image with data and zeroes written before and after adding a dirty bitmap. */
async function makeImage(dir: string): Promise<string> {
  const image = join(dir, 'disk.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', image, '8M']);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 256k', '-c', 'write -P 0x22 1M 100k', '-c', 'write -z 2M 64k', image]);
  await run('qemu-img', ['bitmap', '--add', image, BITMAP]);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x33 3M 192k', '-c', 'write -P 0x44 5000000 12345', '-c', 'write -P 0x55 128k 64k', image]);
  return image;
}

async function serveImage(t: ExecutionContext): Promise<{ dir: string; socket: string; image: string }> {
  const dir = await tempDir(t);
  const image = await makeImage(dir);
  const socket = join(dir, 'nbd.sock');
  await startQemuNbd(t, { path: socket }, ['--read-only', '-f', 'qcow2', '-x', EXPORT, '-B', BITMAP, image]);
  return { dir, socket, image };
}

async function collect(iterable: AsyncIterable<Extent>): Promise<Extent[]> {
  const out: Extent[] = [];
  for await (const extent of iterable) out.push(extent);
  return out;
}

test('extents of base:allocation and of the dirty bitmap equal nbdinfo --map', async (t) => {
  const { socket } = await serveImage(t);
  const client = await NbdClient.connect({ path: socket, exportName: EXPORT, metaContexts: [BASE_ALLOCATION, DIRTY_CONTEXT] });
  t.teardown(() => client.close());
  t.deepEqual([...client.metaContexts].sort(), [BASE_ALLOCATION, DIRTY_CONTEXT].sort());
  const uri = unixUri(socket, EXPORT);
  t.deepEqual(await collect(client.extents(BASE_ALLOCATION)), await nbdinfoMap(uri, BASE_ALLOCATION));
  t.deepEqual(await collect(client.extents(DIRTY_CONTEXT)), await nbdinfoMap(uri, DIRTY_CONTEXT));
  // A sub-range is the clipped whole.
  const range = { offset: 100_000, length: 5 * MiB };
  const clipped = (await nbdinfoMap(uri, DIRTY_CONTEXT))
    .map((e) => {
      const start = Math.max(e.offset, range.offset);
      const end = Math.min(e.offset + e.length, range.offset + range.length);
      return { offset: start, length: end - start, flags: e.flags };
    })
    .filter((e) => e.length > 0);
  t.deepEqual(await collect(client.extents(DIRTY_CONTEXT, range)), clipped);
});

test('bytes read equal nbdcopy output, over several connections', async (t) => {
  const { dir, socket } = await serveImage(t);
  const reference = join(dir, 'reference.raw');
  await run('nbdcopy', [unixUri(socket, EXPORT), reference]);
  const expected = await readFile(reference);

  const client = await NbdClient.connect({ path: socket, exportName: EXPORT, requestSize: 256 * 1024 });
  t.teardown(() => client.close());
  await client.ready();
  t.true((client.flags & TransmissionFlags.CAN_MULTI_CONN) !== 0);
  t.true(client.connectionCount > 1);
  t.is(client.size, expected.length);

  t.true((await client.read(0, client.size)).equals(expected));
  for (const [offset, length] of [
    [1, 1],
    [1 * MiB - 7, 100_003],
    [4_999_999, 12_347],
    [client.size - 5, 5],
  ] as const) {
    t.true((await client.read(offset, length)).equals(expected.subarray(offset, offset + length)), `read ${offset}+${length}`);
  }

  // The stream, holes included, rebuilds the same image and comes in offset order.
  const rebuilt = Buffer.alloc(client.size, 0xff);
  let next = 0;
  let holeBytes = 0;
  for await (const chunk of client.createReadStream()) {
    t.is(chunk.offset, next);
    next += chunk.length;
    if (chunk.kind === 'data') chunk.data.copy(rebuilt, chunk.offset);
    else {
      rebuilt.fill(0, chunk.offset, chunk.offset + chunk.length);
      holeBytes += chunk.length;
    }
  }
  t.is(next, client.size);
  t.true(holeBytes > 0, 'zero extents are told apart from data');
  t.true(rebuilt.equals(expected));
});

test('a stream of the dirty extents carries exactly the bitmap ranges and their bytes', async (t) => {
  const { dir, socket } = await serveImage(t);
  const reference = join(dir, 'reference.raw');
  await run('nbdcopy', [unixUri(socket, EXPORT), reference]);
  const expected = await readFile(reference);
  const dirty = (await nbdinfoMap(unixUri(socket, EXPORT), DIRTY_CONTEXT)).filter((e) => e.flags & 1);

  const client = await NbdClient.connect({ path: socket, exportName: EXPORT, metaContexts: [DIRTY_CONTEXT] });
  t.teardown(() => client.close());
  const covered: Array<{ offset: number; length: number }> = [];
  for await (const chunk of client.chunks({ context: DIRTY_CONTEXT })) {
    const last = covered.at(-1);
    if (last && last.offset + last.length === chunk.offset) last.length += chunk.length;
    else covered.push({ offset: chunk.offset, length: chunk.length });
    const want = expected.subarray(chunk.offset, chunk.offset + chunk.length);
    if (chunk.kind === 'data') t.true(chunk.data.equals(want));
    else t.true(want.every((byte) => byte === 0));
  }
  t.deepEqual(
    covered,
    dirty.map(({ offset, length }) => ({ offset, length })),
  );
});

test('simple replies (no structured replies) read the same bytes', async (t) => {
  const { dir, socket } = await serveImage(t);
  const reference = join(dir, 'reference.raw');
  await run('nbdcopy', [unixUri(socket, EXPORT), reference]);
  const client = await NbdClient.connect({ path: socket, exportName: EXPORT, structuredReplies: false, connections: 1 });
  t.teardown(() => client.close());
  t.false(client.structuredReplies);
  t.deepEqual(client.metaContexts, []);
  t.true((await client.read(0, client.size)).equals(await readFile(reference)));
  await t.throwsAsync(collect(client.extents(BASE_ALLOCATION)), { message: /not negotiated/ });
});

test('export list, meta contexts and export info agree with nbdinfo', async (t) => {
  const { socket } = await serveImage(t);
  const info = JSON.parse(await run('nbdinfo', ['--list', '--json', unixUri(socket)])) as {
    exports: Array<{ 'export-name': string; contexts: string[]; 'export-size': number; block_size_maximum: number; block_size_minimum: number }>;
  };
  const exports = await NbdClient.listExports({ path: socket });
  t.deepEqual(
    exports.map((e) => e.name),
    info.exports.map((e) => e['export-name']),
  );
  const contexts = await NbdClient.listMetaContexts({ path: socket, exportName: EXPORT });
  t.deepEqual(contexts.sort(), [...info.exports[0]!.contexts].sort());
  const client = await NbdClient.connect({ path: socket, exportName: EXPORT });
  t.teardown(() => client.close());
  t.is(client.size, info.exports[0]!['export-size']);
  t.is(client.blockSize.maximum, info.exports[0]!.block_size_maximum);
  t.is(client.blockSize.minimum, info.exports[0]!.block_size_minimum);
  t.true(client.readOnly);
  await t.throwsAsync(client.write(0, Buffer.alloc(512)), { instanceOf: NbdError, code: 'EPERM' } as never);
  await t.throwsAsync(NbdClient.connect({ path: socket, exportName: 'no-such-export' }), { code: 'NBD_REP_ERR_UNKNOWN' } as never);
});

test('TCP transport reads what nbdcopy reads', async (t) => {
  const dir = await tempDir(t);
  const image = await makeImage(dir);
  const port = await freePort();
  await startQemuNbd(t, { host: '127.0.0.1', port }, ['--read-only', '-f', 'qcow2', image]);
  const reference = join(dir, 'reference.raw');
  await run('nbdcopy', [`nbd://127.0.0.1:${port}/`, reference]);
  const client = await NbdClient.connect({ host: '127.0.0.1', port });
  t.teardown(() => client.close());
  t.true((await client.read(0, client.size)).equals(await readFile(reference)));
});

test('writes, zeroes and trims through the client show up in qemu-img compare', async (t) => {
  const dir = await tempDir(t);
  const image = join(dir, 'target.qcow2');
  const size = 4 * MiB;
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', image, String(size)]);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x77 0 4M', image]);
  const socket = join(dir, 'nbd.sock');
  const stop = await startQemuNbd(t, { path: socket }, ['-f', 'qcow2', '--discard=unmap', image]);

  const expected = Buffer.alloc(size, 0x77);
  const client = await NbdClient.connect({ path: socket, requestSize: 64 * 1024 });
  t.false(client.readOnly);
  const pattern = Buffer.alloc(300_001);
  for (let i = 0; i < pattern.length; i++) pattern[i] = (i * 31 + 7) & 0xff;
  await client.write(12_345, pattern, { fua: true });
  pattern.copy(expected, 12_345);
  await client.write(3 * MiB, Buffer.alloc(4096, 0xee));
  expected.fill(0xee, 3 * MiB, 3 * MiB + 4096);
  await client.writeZeroes(1 * MiB, 100_000);
  expected.fill(0, 1 * MiB, 1 * MiB + 100_000);
  await client.writeZeroes(1.5 * MiB, 64 * 1024, { noHole: true });
  expected.fill(0, 1.5 * MiB, 1.5 * MiB + 64 * 1024);
  if (client.flags & TransmissionFlags.SEND_TRIM) {
    // Whole clusters of an image without backing file read back as zeroes once unmapped.
    await client.trim(2 * MiB, 128 * 1024);
    expected.fill(0, 2 * MiB, 2 * MiB + 128 * 1024);
  }
  await client.flush();
  t.true((await client.read(0, size)).equals(expected));
  await client.close();
  await stop();

  const reference = join(dir, 'expected.raw');
  await writeFile(reference, expected);
  const compared = await status('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', image, reference]);
  t.is(compared.code, 0, compared.output);
});
