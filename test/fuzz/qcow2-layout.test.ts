// The qcow2 layout and writer against whatever inputs they may get. Layout only, from
// empty disks to qemu's 2 PiB limit: every input is either planned into metadata that a
// plain reading of the format finds consistent (test/fuzz/qcow2-metadata.ts), or refused
// with a RangeError, and exactly the inputs that should be refused are. Written out, for
// small disks: random runs (adjacent ones too), data chunks covering parts of them, a
// backing file with an odd name or none; qemu-img check finds nothing wrong and qemu-img
// compare sees the raw image built from the same inputs.
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import fc from 'fast-check';
import type { ReadChunk } from '../../src/nbd/index.js';
import {
  CLUSTER_SIZE,
  clusterRuns,
  MAX_VIRTUAL_SIZE,
  metadataClusters,
  planQcow2,
  type ClusterRun,
  type Qcow2LayoutInput,
} from '../../src/backup/qcow2/qcow2-layout.js';
import { writeQcow2 } from '../../src/backup/qcow2/qcow2-writer.js';
import { run, tryRun } from '../helpers/process.js';
import { fuzzRuns, reportCases } from './fuzz-runs.js';
import { checkMetadata } from './qcow2-metadata.js';

const TiB = 2 ** 40;
/**
 * Layouts are read cluster by cluster up to 16 MiB of metadata and an L1 table of 1 MiB
 * (64 TiB disks); beyond, their arithmetic is checked, which a 2 PiB disk shares.
 */
const READ_METADATA_UP_TO = 16 * 1024 * 1024;
const READ_L1_CLUSTERS_UP_TO = 16;

const sectors = (max: number): fc.Arbitrary<number> => fc.integer({ min: 0, max }).map((count) => count * 512);

const virtualSize = fc.oneof(
  { weight: 4, arbitrary: sectors((64 * 2 ** 20) / 512) },
  { weight: 4, arbitrary: sectors((8 * TiB) / 512) },
  { weight: 1, arbitrary: fc.constantFrom(0, 512, CLUSTER_SIZE, CLUSTER_SIZE + 512, 4 * TiB, MAX_VIRTUAL_SIZE, MAX_VIRTUAL_SIZE - 512) },
);

/** Sorted runs, adjacent ones included, spread over the disk: gaps and counts, clipped to `clusters`. */
function runsFor(clusters: number, seeds: Array<{ gap: number; count: number }>): ClusterRun[] {
  const runs: ClusterRun[] = [];
  let at = 0;
  for (const { gap, count } of seeds) {
    const start = at + gap;
    const end = Math.min(clusters, start + count);
    if (start >= end) break;
    runs.push({ start, count: end - start });
    at = end;
  }
  return runs;
}

const runSeeds = fc.array(
  fc.record({
    gap: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 10 }), fc.integer({ min: 1, max: 2 ** 24 }), fc.integer({ min: 1, max: 2 ** 33 })),
    count: fc.oneof(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: 5000 })),
  }),
  { maxLength: 24 },
);

const backingName = fc.oneof(
  fc.constantFrom('base.qcow2', 'vda.0001.full.qcow2', `${'x'.repeat(1017)}.qcow2`, 'é.qcow2', '名前.qcow2', 'with space.qcow2', '\u202e.qcow2'),
  fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 }),
);

const backing = fc.option(fc.record({ file: backingName, format: fc.option(fc.constantFrom('qcow2', 'raw'), { nil: undefined }) }), { nil: undefined });

function check(input: Qcow2LayoutInput): string | undefined {
  const layout = planQcow2(input);
  const data = input.runs.reduce((sum, r) => sum + r.count, 0);
  if (layout.dataClusters !== data) return `data clusters ${layout.dataClusters}, runs hold ${data}`;
  if (layout.totalClusters * CLUSTER_SIZE !== layout.fileSize) return 'file size';
  const metadataClustersCount = 1 + layout.l1Clusters + layout.refcountTableClusters + layout.refcountBlocks + layout.l2Indexes.length;
  if (layout.totalClusters !== metadataClustersCount + data) return 'total clusters are not metadata plus data';
  if (layout.refcountBlocks !== Math.ceil(layout.totalClusters / 32_768)) return 'refcount blocks are not exactly what the clusters need';
  if (layout.refcountTableClusters * 8192 < layout.refcountBlocks) return 'refcount table too small for its blocks';
  if (layout.l2Indexes.some((index, i) => i > 0 && index <= layout.l2Indexes[i - 1]!)) return 'L2 indexes not ascending';
  if (layout.dataOffset > READ_METADATA_UP_TO || layout.l1Clusters > READ_L1_CLUSTERS_UP_TO) return undefined;
  return checkMetadata(Buffer.concat([...metadataClusters(layout)]), layout);
}

test('qcow2 layouts, empty disks to 2 PiB: consistent metadata, refusals exactly where the input is wrong', (t) => {
  const startedAt = performance.now();
  let cases = 0;
  const valid = fc.property(virtualSize, runSeeds, backing, (size, seeds, back) => {
    const input: Qcow2LayoutInput = {
      virtualSize: size,
      runs: runsFor(Math.ceil(size / CLUSTER_SIZE), seeds),
      ...(back ? { backingFile: back.file, ...(back.format ? { backingFormat: back.format } : {}) } : {}),
    };
    cases++;
    if (Buffer.byteLength(input.backingFile ?? 'x') > 1023) return;
    const problem = check(input);
    if (problem) throw new Error(problem);
  });
  const validResult = fc.check(valid, { numRuns: fuzzRuns(400, 1 / 10) });
  if (validResult.failed) t.log(String(validResult.errorInstance));
  t.false(validResult.failed, fc.defaultReportMessage(validResult) ?? '');

  // Anything at all: refused with a RangeError exactly when it breaks a rule.
  const anyNumber = fc.oneof(fc.integer({ min: -3, max: 40 }), fc.constantFrom(Number.NaN, 1.5, -0, 2 ** 53, Number.POSITIVE_INFINITY));
  const anything = fc.record({
    virtualSize: fc.oneof(sectors(80), fc.integer({ min: -1000, max: 3 * CLUSTER_SIZE }), fc.constantFrom(Number.NaN, 2 ** 53, MAX_VIRTUAL_SIZE + 512, 1e300)),
    runs: fc.array(fc.record({ start: anyNumber, count: anyNumber }), { maxLength: 5 }),
    backingFile: fc.option(fc.oneof(backingName, fc.constantFrom('', 'a\0b', 'é'.repeat(600))), { nil: undefined }),
    backingFormat: fc.option(fc.constantFrom('qcow2', 'raw', '', 'q\0', 'x'.repeat(16)), { nil: undefined }),
  });
  const rules = fc.property(anything, (raw) => {
    const input: Qcow2LayoutInput = {
      virtualSize: raw.virtualSize,
      runs: raw.runs,
      ...(raw.backingFile !== undefined ? { backingFile: raw.backingFile } : {}),
      ...(raw.backingFormat !== undefined ? { backingFormat: raw.backingFormat } : {}),
    };
    cases++;
    const clusters = Math.ceil(raw.virtualSize / CLUSTER_SIZE);
    let end = 0;
    const runsOk = raw.runs.every((r) => {
      const ok = Number.isSafeInteger(r.start) && Number.isSafeInteger(r.count) && r.start >= end && r.count >= 1 && r.start + r.count <= clusters;
      end = r.start + r.count;
      return ok;
    });
    const bytes = (text: string | undefined): number => Buffer.byteLength(text ?? '');
    const ok =
      Number.isSafeInteger(raw.virtualSize) &&
      raw.virtualSize >= 0 &&
      raw.virtualSize <= MAX_VIRTUAL_SIZE &&
      raw.virtualSize % 512 === 0 &&
      runsOk &&
      (raw.backingFile === undefined || (bytes(raw.backingFile) >= 1 && bytes(raw.backingFile) <= 1023 && !raw.backingFile.includes('\0'))) &&
      (raw.backingFormat === undefined ||
        (raw.backingFile !== undefined && bytes(raw.backingFormat) >= 1 && bytes(raw.backingFormat) <= 15 && !raw.backingFormat.includes('\0')));
    let problem: string | undefined;
    try {
      problem = check(input);
    } catch (error) {
      if (!(error instanceof RangeError)) throw new Error(`threw ${String(error)}`);
      if (ok) throw new Error(`refused a valid input: ${error.message}`);
      return;
    }
    if (!ok) throw new Error('accepted an input that breaks a rule');
    if (problem) throw new Error(problem);
  });
  const rulesResult = fc.check(rules, { numRuns: fuzzRuns(2000, 1 / 2) });
  if (rulesResult.failed) t.log(String(rulesResult.errorInstance));
  t.false(rulesResult.failed, fc.defaultReportMessage(rulesResult) ?? '');

  // Byte ranges in offset order become the same clusters, merged.
  const ranges = fc.array(
    fc.record({
      gap: fc.integer({ min: 0, max: 3 * CLUSTER_SIZE }),
      length: fc.integer({ min: 0, max: 3 * CLUSTER_SIZE }),
      back: fc.integer({ min: 0, max: 1000 }),
    }),
    {
      maxLength: 12,
    },
  );
  const merging = fc.property(ranges, (seeds) => {
    cases++;
    const list: Array<{ offset: number; length: number }> = [];
    let at = 0;
    for (const { gap, length, back } of seeds) {
      // Overlaps come from stepping back a little: the offsets stay in order.
      const offset = Math.max(list.at(-1)?.offset ?? 0, at + gap - back);
      list.push({ offset, length });
      at = offset + length;
    }
    const runs = clusterRuns(list);
    const wanted = new Set<number>();
    for (const { offset, length } of list)
      if (length > 0) for (let c = Math.floor(offset / CLUSTER_SIZE); c < Math.ceil((offset + length) / CLUSTER_SIZE); c++) wanted.add(c);
    const got = runs.flatMap((r) => Array.from({ length: r.count }, (_, i) => r.start + i));
    if (JSON.stringify(got) !== JSON.stringify([...wanted].sort((a, b) => a - b))) throw new Error(`runs ${JSON.stringify(runs)} for ${JSON.stringify(list)}`);
    if (runs.some((r, i) => i > 0 && r.start <= runs[i - 1]!.start + runs[i - 1]!.count)) throw new Error('runs touch or overlap');
  });
  const mergingResult = fc.check(merging, { numRuns: fuzzRuns(1000, 1 / 4) });
  t.false(mergingResult.failed, fc.defaultReportMessage(mergingResult) ?? '');

  const failures = [validResult, rulesResult, mergingResult].filter((result) => result.failed).length;
  reportCases(t.log.bind(t), 'qcow2 layout', cases, failures, startedAt);
});

/** Bytes that differ by offset and case, quick to make. */
function pattern(offset: number, length: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) out[i] = ((offset + i) * 31 + ((offset + i) >>> 9) + seed) & 0xff;
  return out;
}

const plainName = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 12 }).filter((name) => !/[/\0]/.test(name) && name !== '.' && name !== '..');

const writerCase = fc.record({
  size: sectors(6144),
  runs: fc.array(fc.record({ gap: fc.integer({ min: 0, max: 3 }), count: fc.integer({ min: 1, max: 6 }) }), { maxLength: 8 }),
  chunks: fc.array(
    fc.record({ skip: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 70_000 })), length: fc.integer({ min: 1, max: 200_000 }), hole: fc.boolean() }),
    {
      maxLength: 12,
    },
  ),
  // Plain names, as the manifest allows them: qemu resolves anything with a slash as a path.
  backing: fc.option(fc.record({ name: fc.oneof(fc.constantFrom('base.raw', 'é名 .raw', `${'b'.repeat(200)}.raw`), plainName), seed: fc.nat(255) }), {
    nil: undefined,
  }),
  seed: fc.nat(255),
  withRelease: fc.boolean(),
});

test('written qcow2 images: qemu-img check finds nothing, qemu-img compare sees the raw image of the same inputs', async (t) => {
  const startedAt = performance.now();
  const dir = await mkdtemp(join(tmpdir(), 'lvb-qcow2-fuzz-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  let number = 0;
  const property = fc.asyncProperty(writerCase, async (c) => {
    const caseDir = join(dir, String(number++));
    await run('mkdir', ['-p', caseDir]);
    try {
      const size = c.size;
      const runs = runsFor(Math.ceil(size / CLUSTER_SIZE), c.runs);
      // The guest bytes the runs cover, adjacent runs joined: where data chunks may go.
      const spans: Array<[number, number]> = [];
      for (const r of runs) {
        const from = r.start * CLUSTER_SIZE;
        const to = Math.min(size, (r.start + r.count) * CLUSTER_SIZE);
        const last = spans.at(-1);
        if (last && last[1] === from) last[1] = to;
        else if (from < to) spans.push([from, to]);
      }
      const chunks: ReadChunk[] = [];
      let span = 0;
      let at = spans[0]?.[0] ?? 0;
      for (const seed of c.chunks) {
        if (span >= spans.length) break;
        at += seed.skip;
        while (span < spans.length && at >= spans[span]![1]) {
          span++;
          at = Math.max(at, spans[span]?.[0] ?? 0);
        }
        if (span >= spans.length) break;
        at = Math.max(at, spans[span]![0]);
        const length = Math.min(seed.length, spans[span]![1] - at);
        // Holes are none of the writer's business: it skips them, wherever they are.
        if (seed.hole) chunks.push({ kind: 'hole', offset: at, length });
        else chunks.push({ kind: 'data', offset: at, length, data: pattern(at, length, c.seed) });
        at += length;
      }
      const reference = c.backing ? pattern(0, size, c.backing.seed) : Buffer.alloc(size);
      for (const r of runs) reference.fill(0, r.start * CLUSTER_SIZE, Math.min(size, (r.start + r.count) * CLUSTER_SIZE));
      for (const chunk of chunks) if (chunk.kind === 'data') chunk.data.copy(reference, chunk.offset);
      const referencePath = join(caseDir, 'reference.raw');
      await writeFile(referencePath, reference);
      if (c.backing) await writeFile(join(caseDir, c.backing.name), pattern(0, size, c.backing.seed));

      const input: Qcow2LayoutInput = { virtualSize: size, runs, ...(c.backing ? { backingFile: c.backing.name, backingFormat: 'raw' } : {}) };
      let released = 0;
      const stream = (async function* () {
        for (const chunk of chunks) yield chunk.kind === 'data' && c.withRelease ? { ...chunk, release: () => released++ } : chunk;
      })();
      const image = join(caseDir, 'image.qcow2');
      const result = await writeQcow2(image, input, stream);
      const dataChunks = chunks.filter((chunk) => chunk.kind === 'data');
      if (c.withRelease && released !== dataChunks.length) throw new Error(`${released} releases for ${dataChunks.length} data chunks`);
      const planned = planQcow2(input).fileSize;
      if (result.fileSize !== planned || (await stat(image)).size !== planned) throw new Error(`file of ${result.fileSize} bytes, planned ${planned}`);
      const dataBytes = dataChunks.reduce((sum, chunk) => sum + chunk.length, 0);
      if (result.dataBytes !== dataBytes) throw new Error(`dataBytes ${result.dataBytes}, the chunks held ${dataBytes}`);
      const checked = await tryRun('qemu-img', ['check', '--output=json', image]);
      const report = JSON.parse(checked.stdout || '{}') as Record<string, unknown>;
      if (checked.code !== 0 || report['check-errors'] !== 0 || (report['corruptions'] ?? 0) !== 0 || (report['leaks'] ?? 0) !== 0) {
        throw new Error(`qemu-img check: ${checked.stdout}${checked.stderr}`);
      }
      const compared = await tryRun('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', image, referencePath]);
      if (compared.code !== 0) throw new Error(`qemu-img compare: ${compared.stdout}${compared.stderr}`);
      if (number % 8 === 0) {
        const sum = (await run('xxhsum', ['-H2', image])).split(/\s/)[0];
        if (result.checksum !== `xxh128:${sum}`) throw new Error(`checksum ${result.checksum}, xxhsum says ${sum}`);
      }
    } finally {
      await rm(caseDir, { recursive: true, force: true });
    }
  });
  const result = await fc.check(property, { numRuns: fuzzRuns(30, 1 / 40) });
  reportCases(t.log.bind(t), 'qcow2 writer (qemu-img)', result.numRuns, result.failed ? 1 : 0, startedAt);
  if (result.failed) t.log(String(result.errorInstance));
  t.false(result.failed, fc.defaultReportMessage(result) ?? '');
});
