// Fuzzing the reader through a real restore: images QEMU wrote, with header fields, L1
// and L2 entries and random bytes mutated, or cut short. Every case must end within a
// time bound either in a typed error or in an image equal to what qemu-img reads
// (`qemu-img compare`, something we did not write); an image qemu-img refuses to open
// must be refused by us too.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import test, { type ExecutionContext } from 'ava';
import fc from 'fast-check';
import { restoreChain, type ChainFile } from '../../src/backup/restore/chain-restore.js';
import { checksumFile } from '../../src/backup/checksum.js';
import { BackupSetError } from '../../src/backup/errors.js';
import { tempDir } from './helpers.js';
import { KiB, MiB, assertProperty, createImage, describeChain, qemuImg, qemuIo } from './qcow2-helpers.js';

const exec = promisify(execFile);

const CASE_TIME_LIMIT_MS = 15_000;
const RUNS_PER_IMAGE = 150;

/** Header fields: offset and width in bytes. */
const HEADER_FIELDS: ReadonlyArray<readonly [string, number, number]> = [
  ['magic', 0, 4],
  ['version', 4, 4],
  ['backing_file_offset', 8, 8],
  ['backing_file_size', 16, 4],
  ['cluster_bits', 20, 4],
  ['size', 24, 8],
  ['crypt_method', 32, 4],
  ['l1_size', 36, 4],
  ['l1_table_offset', 40, 8],
  ['refcount_table_offset', 48, 8],
  ['refcount_table_clusters', 56, 4],
  ['nb_snapshots', 60, 4],
  ['snapshots_offset', 64, 8],
  ['incompatible_features', 72, 8],
  ['compatible_features', 80, 8],
  ['autoclear_features', 88, 8],
  ['refcount_order', 96, 4],
  ['header_length', 100, 4],
  ['extensions', 104, 64],
];

type Change = { kind: 'flip'; bit: number } | { kind: 'random'; seed: number } | { kind: 'small'; value: number } | { kind: 'zero' };

type Mutation =
  | { kind: 'header'; field: number; change: Change }
  | { kind: 'l1'; index: number; change: Change }
  | { kind: 'l2'; table: number; index: number; change: Change | { kind: 'set-bit'; bit: 0 | 62 | 63 } }
  | { kind: 'byte'; at: number; value: number }
  | { kind: 'truncate'; at: number };

const change: fc.Arbitrary<Change> = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), bit: fc.integer({ min: 0, max: 511 }) }),
  fc.record({ kind: fc.constant('random' as const), seed: fc.integer() }),
  fc.record({ kind: fc.constant('small' as const), value: fc.integer({ min: 0, max: 70_000 }) }),
  fc.record({ kind: fc.constant('zero' as const) }),
);

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('header' as const), field: fc.nat({ max: HEADER_FIELDS.length - 1 }), change }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('l1' as const), index: fc.nat({ max: 64 }), change }) },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('l2' as const),
      table: fc.nat({ max: 16 }),
      index: fc.nat({ max: 8191 }),
      change: fc.oneof(change, fc.record({ kind: fc.constant('set-bit' as const), bit: fc.constantFrom(0 as const, 62 as const, 63 as const) })),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('byte' as const), at: fc.nat({ max: 2 ** 20 }), value: fc.integer({ min: 0, max: 255 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('truncate' as const), at: fc.nat({ max: 2 ** 22 }) }) },
);

function applyChange(bytes: Buffer, at: number, width: number, what: Change | { kind: 'set-bit'; bit: number }): void {
  if (at + width > bytes.length) return;
  switch (what.kind) {
    case 'flip': {
      const bit = what.bit % (width * 8);
      bytes[at + width - 1 - Math.floor(bit / 8)]! ^= 1 << (bit % 8);
      return;
    }
    case 'set-bit': {
      const bit = what.bit % (width * 8);
      bytes[at + width - 1 - Math.floor(bit / 8)]! |= 1 << (bit % 8);
      return;
    }
    case 'random': {
      let state = what.seed >>> 0 || 1;
      for (let index = 0; index < width; index++) {
        state = (Math.imul(state, 1103515245) + 12345) >>> 0;
        bytes[at + index] = state >>> 24;
      }
      return;
    }
    case 'small':
      bytes.fill(0, at, at + width);
      bytes.writeUInt32BE(what.value >>> 0, at + width - 4);
      return;
    case 'zero':
      bytes.fill(0, at, at + width);
      return;
  }
}

/** L2 table offsets of an intact image, from its L1 table. */
function l2Tables(bytes: Buffer): number[] {
  const l1Entries = bytes.readUInt32BE(36);
  const l1 = Number(bytes.readBigUInt64BE(40));
  const tables: number[] = [];
  for (let index = 0; index < l1Entries && l1 + index * 8 + 8 <= bytes.length; index++) {
    const offset = Number(bytes.readBigUInt64BE(l1 + index * 8) & 0x00fffffffffffe00n);
    if (offset !== 0) tables.push(offset);
  }
  return tables;
}

function mutate(original: Buffer, mutations: readonly Mutation[]): Buffer {
  let bytes = Buffer.from(original);
  const clusterSize = 2 ** original.readUInt32BE(20);
  const tables = l2Tables(original);
  const l1 = Number(original.readBigUInt64BE(40));
  for (const step of mutations) {
    switch (step.kind) {
      case 'header': {
        const [, at, width] = HEADER_FIELDS[step.field]!;
        applyChange(bytes, at, width, step.change);
        break;
      }
      case 'l1':
        applyChange(bytes, l1 + (step.index % Math.max(1, original.readUInt32BE(36))) * 8, 8, step.change);
        break;
      case 'l2': {
        if (tables.length === 0) break;
        const table = tables[step.table % tables.length]!;
        applyChange(bytes, table + (step.index % (clusterSize / 8)) * 8, 8, step.change);
        break;
      }
      case 'byte':
        if (bytes.length > 0) bytes[step.at % bytes.length] = step.value;
        break;
      case 'truncate':
        bytes = bytes.subarray(0, step.at % (bytes.length + 1));
        break;
    }
  }
  return bytes;
}

interface Tally {
  cases: number;
  typedErrors: Map<string, number>;
  matchedQemu: number;
  slowestMs: number;
}

async function qemuCompare(output: string, image: string): Promise<{ verdict: 'identical' | 'different' | 'qemu-refused'; detail: string }> {
  try {
    await exec('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', output, image]);
    return { verdict: 'identical', detail: '' };
  } catch (error) {
    const { code, stdout, stderr } = error as { code?: number; stdout?: string; stderr?: string };
    return { verdict: code === 1 ? 'different' : 'qemu-refused', detail: `${stdout ?? ''}${stderr ?? ''}`.trim() };
  }
}

/** Fuzzes the file at `targetIndex` of the chain `paths` (base first). */
async function fuzzChain(t: ExecutionContext, label: string, paths: readonly string[], targetIndex: number, tally: Tally, root: string): Promise<void> {
  const original = await readFile(paths[targetIndex]!);
  await assertProperty(
    fc.asyncProperty(fc.array(mutation, { minLength: 1, maxLength: 3 }), async (mutations) => {
      const dir = join(root, `case-${tally.cases++}`);
      await mkdir(dir);
      try {
        const copies = paths.map((path) => join(dir, basename(path)));
        for (const [index, path] of paths.entries())
          await writeFile(copies[index]!, index === targetIndex ? mutate(original, mutations) : await readFile(path));
        // The manifest describes the files as they are now: this is about the reader, not the checksums.
        const chain = (await describeChain(copies.slice(0, targetIndex))).concat(await describeMutated(copies, targetIndex));
        const output = join(dir, 'out.raw');
        const started = Date.now();
        let timer: NodeJS.Timeout | undefined;
        const outcome = await Promise.race([
          restoreChain(chain, output, { format: 'raw', qemuImgFallback: false }).then(
            () => 'restored' as const,
            (error: unknown) => error,
          ),
          new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), CASE_TIME_LIMIT_MS))),
        ]);
        clearTimeout(timer);
        tally.slowestMs = Math.max(tally.slowestMs, Date.now() - started);
        if (outcome === 'timeout') throw new Error(`${label}: no outcome within ${CASE_TIME_LIMIT_MS} ms for ${JSON.stringify(mutations)}`);
        if (outcome !== 'restored') {
          const typed = outcome instanceof BackupSetError ? outcome.code : undefined;
          if (typed !== 'CHAIN_BROKEN' && typed !== 'IMAGE_UNSUPPORTED')
            throw new Error(`${label}: untyped failure for ${JSON.stringify(mutations)}: ${String((outcome as Error)?.stack ?? outcome)}`);
          tally.typedErrors.set(typed, (tally.typedErrors.get(typed) ?? 0) + 1);
          return;
        }
        // What we read must be what QEMU reads; an image QEMU refuses to open, we must refuse too.
        const { verdict, detail } = await qemuCompare(output, copies.at(-1)!);
        if (verdict !== 'identical')
          throw new Error(
            `${label}: ${verdict === 'different' ? 'restored image differs from what qemu-img reads' : 'restored an image qemu-img refuses'} (${detail}), for ${JSON.stringify(mutations)}`,
          );
        tally.matchedQemu++;
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    }),
    { numRuns: RUNS_PER_IMAGE, endOnFailure: true },
  );
  t.pass(label);
}

/** The mutated file and the ones above it, as they are on disk (header fields read leniently). */
async function describeMutated(copies: readonly string[], from: number): Promise<ChainFile[]> {
  const described: ChainFile[] = [];
  for (let index = from; index < copies.length; index++) {
    const path = copies[index]!;
    const bytes = await readFile(path);
    // As qemu-img info would report it: whole sectors.
    const sizeField = bytes.length >= 32 ? Number(bytes.readBigUInt64BE(24) & 0x1fffffffffffffn) : 0;
    const virtualSize = sizeField - (sizeField % 512);
    described.push({
      name: basename(path),
      path,
      checksum: await checksumFile(path),
      size: (await stat(path)).size,
      backingFile: index === 0 ? null : basename(copies[index - 1]!),
      virtualSize,
    });
  }
  return described;
}

test('mutated and truncated images end in a typed error or in what qemu-img reads, in bounded time', async (t) => {
  const root = await tempDir(t, 'reader-fuzz-');
  const images = join(root, 'images');
  await mkdir(images);

  // v3, 64 KiB clusters: compressed, data and zero clusters.
  const source = join(images, 'source.raw');
  await writeFile(source, Buffer.concat([Buffer.from('compressible text '.repeat(40_000)), randomBytes(MiB / 2)]));
  await qemuImg('resize', '-q', '-f', 'raw', source, String(2 * MiB));
  const v3 = join(images, 'v3.qcow2');
  await qemuImg('convert', '-c', '-f', 'raw', '-O', 'qcow2', source, v3);
  await qemuIo(v3, ['write -P 0x31 64k 128k', 'write -z 1M 128k', 'write -z -u 1536k 64k']);

  // v2, 4 KiB clusters.
  const v2 = join(images, 'v2.qcow2');
  await createImage({ path: v2, size: MiB, options: { compat: '0.10', cluster_size: '4096' } });
  await qemuIo(v2, ['write -P 0x41 0 300k', 'write -P 0x42 600k 100k', 'discard 32k 8k']);

  // A chain: 512-byte clusters under a 64 KiB overlay; the overlay is mutated.
  const base = join(images, 'base.qcow2');
  await createImage({ path: base, size: 256 * KiB, options: { cluster_size: '512' } });
  await qemuIo(base, ['write -c -P 0x52 0 512', 'write -P 0x51 512 255k']);
  const top = join(images, 'top.qcow2');
  await createImage({ path: top, size: 512 * KiB, backing: base });
  await qemuIo(top, ['write -P 0x53 64k 64k', 'write -z 192k 64k']);

  const tally: Tally = { cases: 0, typedErrors: new Map(), matchedQemu: 0, slowestMs: 0 };
  const work = join(root, 'work');
  await mkdir(work);
  await fuzzChain(t, 'v3 with compressed clusters', [v3], 0, tally, work);
  await fuzzChain(t, 'v2 with 4 KiB clusters', [v2], 0, tally, work);
  await fuzzChain(t, 'overlay of a 512-byte-cluster base', [base, top], 1, tally, work);
  await fuzzChain(t, 'base of 512-byte clusters under an overlay', [base, top], 0, tally, work);

  const errors = [...tally.typedErrors].map(([code, count]) => `${count} ${code}`).join(', ');
  const summary = `${tally.cases} fuzz cases: ${errors}; ${tally.matchedQemu} restored identical to qemu-img's reading; slowest ${tally.slowestMs} ms`;
  t.log(summary);
  console.log(`qcow2 reader fuzz: ${summary}`);
  t.is(tally.cases, 4 * RUNS_PER_IMAGE);
});
