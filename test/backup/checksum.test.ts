// Backup checksums: XXH3-128 from our addon must be exactly what `xxhsum -H2` prints
// for the same bytes, so anyone can check a backup file without this library; sets
// from before keep their sha256 checksums and are checked with sha256.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { checksumAlgorithm, checksumFile, createChecksum, fileChecksumMatches } from '../../src/backup/checksum.js';
import { nativeAddon } from '../../src/libvirt/native.js';
import { run } from '../helpers/process.js';

const addon = nativeAddon();

test('xxh128 of files of many sizes equals xxhsum -H2, in one update or many', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'lvb-checksum-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // Sizes around XXH3's internal boundaries (16, 128, 240 bytes, 1 KiB stripes, 64 KiB blocks).
  for (const size of [0, 1, 3, 16, 17, 128, 129, 240, 241, 1024, 65536, 65537, 5 * 2 ** 20 + 7]) {
    const bytes = randomBytes(size);
    const path = join(dir, `f${size}`);
    await writeFile(path, bytes);
    const expected = `xxh128:${(await run('xxhsum', ['-H2', path])).split(/\s/)[0]}`;
    t.is(await checksumFile(path), expected, `file of ${size} bytes`);
    const pieces = createChecksum('xxh128');
    for (let at = 0; at < size; at += 1000) pieces.update(bytes.subarray(at, at + 1000));
    t.is(pieces.digest(), expected, `${size} bytes in 1000-byte pieces`);
  }
});

test('sha256 checksums of version 1 sets are checked with sha256', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'lvb-checksum-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const bytes = randomBytes(300_000);
  const path = join(dir, 'old.qcow2');
  await writeFile(path, bytes);
  const stored = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  t.is(checksumAlgorithm(stored), 'sha256');
  t.deepEqual(await fileChecksumMatches(path, stored), { matches: true, actual: stored });
  await writeFile(path, Buffer.concat([bytes, Buffer.from([0])]));
  const after = await fileChecksumMatches(path, stored);
  t.false(after.matches);
  t.regex(after.actual, /^sha256:[0-9a-f]{64}$/);
});

test('bad checksum input is refused with a message that names it', (t) => {
  t.throws(() => createChecksum('md5' as never), { instanceOf: TypeError, message: "unknown checksum algorithm 'md5' (known: xxh128, sha256)" });
  t.throws(() => checksumAlgorithm('xxh128:zz'), {
    instanceOf: TypeError,
    message: "not a checksum: 'xxh128:zz' (expected xxh128:<32 hex> or sha256:<64 hex>)",
  });
  const hash = new addon.Xxh128();
  t.throws(() => hash.update('text' as never), { instanceOf: TypeError, message: 'The "bytes" argument must be a Uint8Array or Buffer' });
  t.throws(() => hash.update(undefined as never), { instanceOf: TypeError });
  t.regex(hash.digest(), /^[0-9a-f]{32}$/);
  t.throws(() => hash.digest(), { message: 'xxh128: digest() called twice' });
  t.throws(() => hash.update(Buffer.alloc(1)), { message: 'xxh128: update() after digest()' });
  const update = addon.Xxh128.prototype.update;
  t.throws(() => update.call({}, Buffer.alloc(1)), { instanceOf: TypeError, message: 'Illegal invocation: receiver is not a Xxh128' });
  t.throws(() => (addon.Xxh128 as unknown as () => void)(), { instanceOf: TypeError });
});
