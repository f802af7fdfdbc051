// The qcow2 reader against images QEMU's tools wrote: every restore is judged by
// qemu-img (compare, check), never by our own reader.
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { restoreChain } from '../../src/backup/restore/chain-restore.js';
import { BackupSetError } from '../../src/backup/errors.js';
import { EXTENT_COMPRESSED, EXTENT_DATA, EXTENT_ZERO, bufferByteSource, readQcow2Image, type Qcow2Image } from '../../src/backup/qcow2/qcow2-reader.js';
import { tempDir } from './helpers.js';
import {
  KiB,
  MiB,
  createImage,
  describeChain,
  imageInfo,
  qemuImg,
  qemuImgCheckClean,
  qemuImgCompare,
  qemuImgRaw,
  qemuIo,
  restorePaths,
} from './qcow2-helpers.js';

async function readImage(path: string): Promise<Qcow2Image> {
  return readQcow2Image(bufferByteSource(await readFile(path)), path);
}

function kindsOf(image: Qcow2Image): Set<number> {
  return new Set(Array.from(image.extents.kind.subarray(0, image.extents.count)));
}

/** Restores the chain (base first) as raw and qcow2 and has qemu-img judge both. */
async function assertRestoresLikeQemu(t: ExecutionContext, paths: readonly string[], dir: string): Promise<void> {
  const top = paths.at(-1)!;
  const reference = await qemuImgRaw(top, dir);
  const raw = join(dir, 'restored.raw');
  const report = await restorePaths(paths, raw, { format: 'raw' });
  t.is(report.method, 'one-pass');
  t.true((await readFile(raw)).equals(reference), 'raw output byte for byte as qemu-img convert');
  t.true((await qemuImgCompare(raw, top)).identical, 'qemu-img compare, raw');
  const qcow2 = join(dir, 'restored.qcow2');
  t.is((await restorePaths(paths, qcow2, { format: 'qcow2' })).method, 'one-pass');
  const compared = await qemuImgCompare(qcow2, top);
  t.true(compared.identical, `qemu-img compare, qcow2: ${compared.message}`);
  const check = await qemuImgCheckClean(qcow2);
  t.true(check.clean, check.report);
  t.is((await imageInfo(qcow2))['backing-filename'], undefined, 'standalone');
}

test('v3: data, zero clusters with and without an offset, discarded and unallocated ranges', async (t) => {
  const dir = await tempDir(t, 'reader-');
  const plain = join(dir, 'plain.qcow2');
  await createImage({ path: plain, size: 8 * MiB });
  await qemuIo(plain, ['write -P 0x11 0 1M', 'write -z 1M 512k', 'write -P 0x22 3M 64k', 'write -P 0x33 5M 200k', 'discard 5M 64k', 'write -P 0x44 8128k 64k']);
  // Preallocated metadata: `write -z` keeps the cluster's offset and sets the zero flag.
  const preallocated = join(dir, 'preallocated.qcow2');
  await createImage({ path: preallocated, size: 2 * MiB, options: { preallocation: 'metadata' } });
  await qemuIo(preallocated, ['write -P 0x55 0 2M', 'write -z 64k 128k', 'write -z -u 1M 64k']);
  const map = JSON.parse(await qemuImg('map', '--output=json', preallocated)) as Array<{ zero: boolean; data: boolean; offset?: number }>;
  t.true(
    map.some((extent) => extent.zero && !extent.data && extent.offset !== undefined),
    'qemu-img shows a zero cluster that keeps its offset',
  );

  const image = await readImage(plain);
  t.is(image.header.version, 3);
  t.is(image.header.clusterSize, 64 * KiB);
  t.deepEqual(kindsOf(image), new Set([EXTENT_DATA, EXTENT_ZERO]));
  t.true(kindsOf(await readImage(preallocated)).has(EXTENT_ZERO));
  await assertRestoresLikeQemu(t, [plain], dir);
  await assertRestoresLikeQemu(t, [preallocated], await tempDir(t, 'reader-'));
});

test('compressed clusters (qemu-img convert -c), zlib and zstd, at 512 B, 4 KiB, 64 KiB and 2 MiB clusters', async (t) => {
  const dir = await tempDir(t, 'reader-');
  const source = join(dir, 'source.raw');
  // Compressible text, incompressible noise, and zeroes.
  const text = Buffer.from('the quick brown fox jumps over the lazy dog. '.repeat(30_000));
  await writeFile(source, Buffer.concat([text, randomBytes(MiB + 777), Buffer.alloc(MiB), text.subarray(0, 300_000)]));
  await qemuImg('resize', '-f', 'raw', source, String(6 * MiB));
  for (const compressionType of ['zlib', 'zstd'] as const) {
    for (const clusterSize of [512, 4 * KiB, 64 * KiB, 2 * MiB]) {
      const here = await tempDir(t, 'reader-');
      const compressed = join(here, `compressed-${compressionType}-${clusterSize}.qcow2`);
      const options = `cluster_size=${clusterSize},compression_type=${compressionType}`;
      await qemuImg('convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', options, source, compressed);
      const image = await readImage(compressed);
      t.is(image.header.compression, compressionType);
      t.true(kindsOf(image).has(EXTENT_COMPRESSED), `${options}: compressed clusters present`);
      await assertRestoresLikeQemu(t, [compressed], here);
    }
  }
  // Compressed writes into an overlay, over a base.
  const base = join(dir, 'base.qcow2');
  await createImage({ path: base, size: 4 * MiB });
  await qemuIo(base, ['write -P 0x61 0 4M']);
  const overlay = join(dir, 'overlay.qcow2');
  await createImage({ path: overlay, size: 4 * MiB, backing: base });
  await qemuIo(overlay, ['write -c -P 0x62 64k 128k', 'write -c -P 0x00 1M 64k', 'write -P 0x63 2M 4k']);
  await assertRestoresLikeQemu(t, [base, overlay], dir);
});

test('version 2 images (compat=0.10), alone and as a chain', async (t) => {
  const dir = await tempDir(t, 'reader-');
  const base = join(dir, 'v2-base.qcow2');
  await createImage({ path: base, size: 6 * MiB, options: { compat: '0.10' } });
  await qemuIo(base, ['write -P 0x71 0 2M', 'write -P 0x72 4M 1M', 'write -z 512k 64k', 'discard 4M 64k']);
  const top = join(dir, 'v2-top.qcow2');
  await createImage({ path: top, size: 6 * MiB, backing: base, options: { compat: '0.10' } });
  await qemuIo(top, ['write -P 0x73 1M 2M', 'write -z 4160k 64k', 'discard 0 64k']);
  const image = await readImage(top);
  t.is(image.header.version, 2);
  t.is(image.header.backingFile, 'v2-base.qcow2');
  t.is(image.header.backingFormat, 'qcow2');
  await assertRestoresLikeQemu(t, [base], dir);
  await assertRestoresLikeQemu(t, [base, top], await tempDir(t, 'reader-'));
});

test('three layers with different cluster sizes, a base smaller than the top, zeroes over data', async (t) => {
  const dir = await tempDir(t, 'reader-');
  const base = join(dir, 'base.qcow2');
  await createImage({ path: base, size: 4 * MiB });
  await qemuIo(base, ['write -P 0x81 0 4M']);
  const middle = join(dir, 'middle.qcow2');
  await createImage({ path: middle, size: 5 * MiB, backing: base, options: { cluster_size: '4096' } });
  await qemuIo(middle, ['write -P 0x82 12k 100k', 'write -z 1M 8k', 'write -P 0x83 4300k 20k', 'discard 2M 4k']);
  const top = join(dir, 'top.qcow2');
  await createImage({ path: top, size: 6 * MiB, backing: middle, options: { cluster_size: '512' } });
  await qemuIo(top, ['write -P 0x84 1000k 3k', 'write -z 16k 1k', 'write -P 0x85 6143k 1k', 'write -c -P 0x86 3M 512']);
  const chain = await describeChain([base, middle, top]);
  t.deepEqual(
    chain.map((file) => [file.name, file.backingFile]),
    [
      ['base.qcow2', null],
      ['middle.qcow2', 'base.qcow2'],
      ['top.qcow2', 'middle.qcow2'],
    ],
  );
  await assertRestoresLikeQemu(t, [base, middle, top], dir);
});

test('a backing file smaller than its overlay hides what the layers below it hold past its end', async (t) => {
  const dir = await tempDir(t, 'reader-');
  const base = join(dir, 'base.qcow2');
  await createImage({ path: base, size: 2 * MiB });
  await qemuIo(base, ['write -P 0x91 0 2M']);
  const middle = join(dir, 'middle.qcow2');
  await createImage({ path: middle, size: MiB, backing: base, options: { cluster_size: '4096' } });
  await qemuIo(middle, ['write -P 0x92 64k 64k']);
  const top = join(dir, 'top.qcow2');
  await createImage({ path: top, size: 2 * MiB, backing: middle });
  await qemuIo(top, ['write -P 0x93 1536k 64k']);
  await assertRestoresLikeQemu(t, [base, middle, top], dir);
  const restored = await readFile(join(dir, 'restored.raw'));
  t.is(restored[MiB + 100], 0, 'past the middle layer: zeroes, not the base');
  t.is(restored[1536 * KiB], 0x93);
});

/** Rewrites bytes of the header of a copy of `path`. */
async function patched(path: string, copy: string, patches: Array<{ at: number; bytes: number[] }>): Promise<string> {
  const bytes = await readFile(path);
  for (const { at, bytes: values } of patches) Buffer.from(values).copy(bytes, at);
  await writeFile(copy, bytes);
  return copy;
}

test('refuses what it does not read, naming the feature', async (t) => {
  const dir = await tempDir(t, 'reader-');
  const plain = join(dir, 'plain.qcow2');
  await createImage({ path: plain, size: MiB });
  await qemuIo(plain, ['write -P 0x11 0 64k']);
  const made = async (name: string, options: Record<string, string>, extra: string[] = []) => {
    const path = join(dir, name);
    const create = () =>
      qemuImg(
        'create',
        '-q',
        '-f',
        'qcow2',
        ...extra,
        '-o',
        Object.entries(options)
          .map(([key, value]) => `${key}=${value}`)
          .join(','),
        path,
        String(MiB),
      );
    // qemu-img times LUKS key derivation by the thread's CPU time, and gives up when a
    // round measures 0 ms (a clock tick coarser than the work): a measuring quirk, tried again.
    for (let attempt = 1; ; attempt++) {
      try {
        await create();
        return path;
      } catch (error) {
        if (attempt >= 5 || !/Unable to get accurate CPU usage/.test(String((error as { stderr?: string }).stderr))) throw error;
      }
    }
  };
  const cases: Array<[string, Promise<string>, RegExp]> = [
    [
      'compression type 2',
      made('zstd.qcow2', { compression_type: 'zstd' }).then((path) => patched(path, join(dir, 'type2.qcow2'), [{ at: 104, bytes: [2] }])),
      /compressed clusters use compression type 2 \(incompatible feature "compression type"\)/,
    ],
    ['extended L2', made('extended.qcow2', { extended_l2: 'on' }), /extended L2 entries/],
    ['external data file', made('external.qcow2', { data_file: join(dir, 'external.raw') }), /external data file/],
    [
      'LUKS',
      made('luks.qcow2', { 'encrypt.format': 'luks', 'encrypt.key-secret': 'sec0' }, ['--object', 'secret,id=sec0,data=passphrase']),
      /is encrypted \(LUKS\)/,
    ],
    ['dirty', patched(plain, join(dir, 'dirty.qcow2'), [{ at: 79, bytes: [0x01] }]), /marked dirty/],
    ['corrupt', patched(plain, join(dir, 'corrupt.qcow2'), [{ at: 79, bytes: [0x02] }]), /marked corrupt/],
    ['unknown bit', patched(plain, join(dir, 'unknown.qcow2'), [{ at: 77, bytes: [0x02] }]), /incompatible feature bit 17 unknown/],
    ['version 4', patched(plain, join(dir, 'v4.qcow2'), [{ at: 7, bytes: [4] }]), /version 4 is not supported/],
    ['4 MiB clusters', patched(plain, join(dir, 'huge.qcow2'), [{ at: 23, bytes: [22] }]), /larger than the 2 MiB/],
    [
      'internal snapshot',
      patched(plain, join(dir, 'snapshot-source.qcow2'), []).then(async (path) => {
        await qemuImg('snapshot', '-c', 'before', path);
        return path;
      }),
      /holds 1 internal snapshot/,
    ],
  ];
  for (const [label, pathPromise, message] of cases) {
    const path = await pathPromise;
    const error = await t.throwsAsync(readImage(path), { instanceOf: BackupSetError }, label);
    t.is(error?.code, 'IMAGE_UNSUPPORTED', label);
    t.regex(error!.message, message, label);
  }
});

test('malformed headers and tables end in CHAIN_BROKEN, naming what is wrong', async (t) => {
  const dir = await tempDir(t, 'reader-');
  const plain = join(dir, 'plain.qcow2');
  await createImage({ path: plain, size: 2 * MiB });
  await qemuIo(plain, ['write -P 0x11 0 2M']);
  const image = await readImage(plain);
  const l1 = image.header.l1Offset;
  const bytes = await readFile(plain);
  const l2 = Number(bytes.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
  const cases: Array<[string, Array<{ at: number; bytes: number[] }>, RegExp]> = [
    ['magic', [{ at: 0, bytes: [0x51, 0x46, 0x49, 0xfa] }], /not a qcow2 image/],
    ['cluster bits', [{ at: 23, bytes: [8] }], /at least 512 bytes/],
    ['L1 too small', [{ at: 36, bytes: [0, 0, 0, 0] }], /the L1 table has 0 entries/],
    ['L1 unaligned', [{ at: 47, bytes: [0x08] }], /not cluster aligned/],
    ['L1 beyond the file', [{ at: 40, bytes: [0, 0, 0, 0x10, 0, 0, 0, 0] }], /runs past the end of the file/],
    ['L2 beyond the file', [{ at: l1, bytes: [0x80, 0, 0, 0x10, 0, 0, 0, 0] }], /L2 table of guest offset 0 .* lies beyond the end of the file/],
    ['L1 reserved bits', [{ at: l1 + 7, bytes: [0x01] }], /L1 entry 0 has reserved bits set/],
    ['data beyond the file', [{ at: l2, bytes: [0x80, 0, 0, 0x10, 0, 0, 0, 0] }], /data cluster of guest offset 0 .* lies beyond the end of the file/],
    ['data unaligned', [{ at: l2 + 6, bytes: [0x02] }], /guest offset 0 .* is not cluster aligned/],
    ['L2 reserved bits', [{ at: l2 + 7, bytes: [0x02] }], /reserved bits set/],
    [
      'backing name too long',
      [
        { at: 8, bytes: [0, 0, 0, 0, 0, 0, 0, 0x70] },
        { at: 16, bytes: [0, 0, 0x10, 0] },
      ],
      /backing file name of 4096 bytes is too long/,
    ],
    ['header length', [{ at: 103, bytes: [0x65] }], /header_length 101/],
    ['no refcount table', [{ at: 56, bytes: [0, 0, 0, 0] }], /has no refcount table/],
    ['snapshot table unaligned', [{ at: 71, bytes: [0x10] }], /snapshot table offset 16 is not cluster aligned/],
    ['extension past the header area', [{ at: 116, bytes: [0, 1, 0, 0] }], /header extension 0x[0-9a-f]+ of 65536 bytes runs past the header area/],
  ];
  for (const [label, patches, message] of cases) {
    const path = await patched(plain, join(dir, `${label.replaceAll(' ', '-')}.qcow2`), patches);
    const error = await t.throwsAsync(readImage(path), { instanceOf: BackupSetError }, label);
    t.is(error?.code, 'CHAIN_BROKEN', label);
    t.regex(error!.message, message, label);
  }
  // An overlay whose backing format extension names something else than qcow2 (one bit
  // flipped: "qgow2", which QEMU refuses to open).
  const base = join(dir, 'base.qcow2');
  const overlay = join(dir, 'overlay.qcow2');
  await createImage({ path: base, size: 2 * MiB });
  await createImage({ path: overlay, size: 2 * MiB, backing: base });
  const overlayBytes = await readFile(overlay);
  const format = overlayBytes.indexOf('qcow2', 72);
  t.true(format > 0, 'the backing format extension');
  const renamed = await patched(overlay, join(dir, 'qgow2.qcow2'), [{ at: format + 1, bytes: ['g'.charCodeAt(0)] }]);
  const wrongFormat = await t.throwsAsync(readImage(renamed), { instanceOf: BackupSetError });
  t.is(wrongFormat?.code, 'CHAIN_BROKEN');
  t.regex(wrongFormat!.message, /backing file format is "qgow2", expected qcow2/);
  // Truncated inside the header, inside the L1 table, inside an L2 table.
  for (const length of [50, l1 + 4, l2 + 100]) {
    const path = join(dir, `truncated-${length}.qcow2`);
    await writeFile(path, bytes.subarray(0, length));
    const error = await t.throwsAsync(readImage(path), { instanceOf: BackupSetError }, `truncated at ${length}`);
    t.is(error?.code, 'CHAIN_BROKEN');
  }
  // Version 2 has no zero flag; QEMU calls such an entry corruption.
  const v2 = join(dir, 'v2.qcow2');
  await createImage({ path: v2, size: MiB, options: { compat: '0.10' } });
  await qemuIo(v2, ['write -P 0x13 0 64k']);
  const v2Bytes = await readFile(v2);
  const v2Table = Number(v2Bytes.readBigUInt64BE(Number(v2Bytes.readBigUInt64BE(40))) & 0x00fffffffffffe00n);
  v2Bytes[v2Table + 7]! |= 1;
  await writeFile(v2, v2Bytes);
  const zeroFlag = await t.throwsAsync(readImage(v2), { instanceOf: BackupSetError });
  t.regex(zeroFlag!.message, /has the zero flag, which version 2 images do not have/);
  // Two L1 entries naming one L2 table would map the same entries twice: refused.
  const bigger = join(dir, 'bigger.qcow2');
  await createImage({ path: bigger, size: 1024 * MiB });
  await qemuIo(bigger, ['write -P 0x12 0 64k']);
  const biggerImage = await readImage(bigger);
  const biggerBytes = await readFile(bigger);
  biggerBytes.copy(biggerBytes, biggerImage.header.l1Offset + 8, biggerImage.header.l1Offset, biggerImage.header.l1Offset + 8);
  const shared = join(dir, 'shared-l2.qcow2');
  await writeFile(shared, biggerBytes);
  const error = await t.throwsAsync(readImage(shared), { instanceOf: BackupSetError });
  t.regex(error!.message, /is used by two L1 entries/);
});

test('a file the reader refuses is restored by qemu-img once its checksum matches; a damaged one is refused first', async (t) => {
  const dir = await tempDir(t, 'reader-');
  const base = join(dir, 'base.qcow2');
  await createImage({ path: base, size: 2 * MiB });
  await qemuIo(base, ['write -P 0x21 0 2M']);
  const top = join(dir, 'top.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', '-o', 'extended_l2=on', top, String(2 * MiB));
  await qemuIo(top, ['write -P 0x22 4k 8k']);
  const chain = await describeChain([base, top]);
  const notices: string[] = [];
  const output = join(dir, 'out', 'disk.raw');
  await mkdir(join(dir, 'out'));
  const report = await restoreChain(chain, output, { format: 'raw', onNotice: (message) => notices.push(message) });
  t.is(report.method, 'qemu-img');
  t.is(
    report.bytesStreamed,
    chain.reduce((sum, file) => sum + file.size, 0),
    'checksums were checked before qemu-img ran',
  );
  t.regex(notices.join('\n'), /top\.qcow2: the image uses extended L2 entries .*; restoring this disk with qemu-img convert instead/);
  t.true((await qemuImgCompare(output, top)).identical);
  t.is((await stat(output)).mode & 0o777, 0o600);

  // A damaged file: refused with its checksum, nothing converted or left behind.
  const handle = await open(base, 'r+');
  await handle.write(Buffer.from([0x99]), 0, 1, 100_000);
  await handle.close();
  const damaged = join(dir, 'out', 'damaged.raw');
  const error = await t.throwsAsync(restoreChain(chain, damaged, { format: 'raw' }), { instanceOf: BackupSetError });
  t.is(error?.code, 'CHECKSUM_MISMATCH');
  t.regex(error!.message, /^base\.qcow2: checksum is xxh128:[0-9a-f]{32}, the manifest says xxh128:[0-9a-f]{32}; the file is damaged$/);
  t.deepEqual(await readdir(join(dir, 'out')), ['disk.raw']);
});
