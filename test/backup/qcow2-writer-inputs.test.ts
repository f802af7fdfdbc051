// What the qcow2 layout and writer accept, what they refuse and how, and the writer
// faults the fuzzing of their inputs (test/fuzz/qcow2-layout.test.ts) found.
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import type { ReadChunk } from '../../src/nbd/index.js';
import { CLUSTER_SIZE, clusterRuns, MAX_VIRTUAL_SIZE, metadataInTurns, planQcow2, type Qcow2LayoutInput } from '../../src/backup/qcow2/qcow2-layout.js';
import { writeQcow2 } from '../../src/backup/qcow2/qcow2-writer.js';
import { tryRun } from '../helpers/process.js';

const MiB = 1024 * 1024;

async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'lvb-qcow2-inputs-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function* chunksOf(...chunks: ReadChunk[]): AsyncGenerator<ReadChunk> {
  yield* chunks;
}

const refused: Array<[string, Qcow2LayoutInput, RegExp]> = [
  ['a size that is not whole sectors', { virtualSize: 100_000, runs: [] }, /not a multiple of 512: qemu .* would drop the last 160 bytes/],
  ['a negative size', { virtualSize: -512, runs: [] }, /whole number of bytes/],
  ['a fractional size', { virtualSize: 1.5, runs: [] }, /whole number of bytes/],
  ['a size qemu cannot open', { virtualSize: MAX_VIRTUAL_SIZE + 512, runs: [] }, /whole number of bytes from 0 to/],
  [
    'unsorted runs',
    {
      virtualSize: MiB,
      runs: [
        { start: 5, count: 1 },
        { start: 2, count: 1 },
      ],
    },
    /runs\[1\] starts at cluster 2, before runs\[0\] ends at 6/,
  ],
  [
    'overlapping runs',
    {
      virtualSize: MiB,
      runs: [
        { start: 0, count: 4 },
        { start: 3, count: 2 },
      ],
    },
    /runs\[1\] .*must not overlap/,
  ],
  ['an empty run', { virtualSize: MiB, runs: [{ start: 0, count: 0 }] }, /runs\[0\] \(0\+0\) must be a first cluster and a count of at least 1/],
  ['a negative run', { virtualSize: MiB, runs: [{ start: -1, count: 2 }] }, /runs\[0\]/],
  ['a run past the disk', { virtualSize: MiB, runs: [{ start: 15, count: 2 }] }, /lies beyond the disk \(16 clusters\)/],
  ['an empty backing file name', { virtualSize: MiB, runs: [], backingFile: '' }, /backing file name must be 1 to 1023 bytes/],
  ['a backing file name with NUL', { virtualSize: MiB, runs: [], backingFile: 'base\0.qcow2' }, /without NUL/],
  ['a backing file name qemu would cut', { virtualSize: MiB, runs: [], backingFile: `${'é'.repeat(512)}.qcow2` }, /1 to 1023 bytes/],
  ['a backing format without a backing file', { virtualSize: MiB, runs: [], backingFormat: 'qcow2' }, /needs a backing file/],
  [
    'a backing format qemu would refuse',
    { virtualSize: MiB, runs: [], backingFile: 'base.qcow2', backingFormat: 'qcow2-but-longer' },
    /backing format must be 1 to 15 bytes/,
  ],
];

for (const [name, input, message] of refused) {
  test(`planQcow2 refuses ${name}`, (t) => {
    t.throws(() => planQcow2(input), { instanceOf: RangeError, message });
  });
}

test('planQcow2 takes adjacent runs as they are: the same clusters as one run', (t) => {
  const apart = planQcow2({
    virtualSize: MiB,
    runs: [
      { start: 0, count: 2 },
      { start: 2, count: 3 },
    ],
  });
  const joined = planQcow2({ virtualSize: MiB, runs: [{ start: 0, count: 5 }] });
  t.is(apart.fileSize, joined.fileSize);
  t.deepEqual(apart.l2Indexes, joined.l2Indexes);
});

test('writeQcow2 refuses bad inputs before it creates the file', async (t) => {
  const dir = await tempDir(t);
  await t.throwsAsync(writeQcow2(join(dir, 'x.qcow2'), { virtualSize: 1000, runs: [] }, chunksOf()), { instanceOf: RangeError });
  t.deepEqual(await readdir(dir), []);
});

test('clusterRuns merges what overlaps or touches, and refuses ranges out of order or not whole', (t) => {
  t.deepEqual(
    clusterRuns([
      { offset: 0, length: 10 },
      { offset: 5, length: CLUSTER_SIZE },
      { offset: 2 * CLUSTER_SIZE, length: 1 },
      { offset: 5 * CLUSTER_SIZE, length: 0 },
      { offset: 7 * CLUSTER_SIZE + 1, length: 1 },
    ]),
    [
      { start: 0, count: 3 },
      { start: 7, count: 1 },
    ],
  );
  t.throws(
    () =>
      clusterRuns([
        { offset: 3 * CLUSTER_SIZE, length: 1 },
        { offset: 0, length: 1 },
      ]),
    { instanceOf: RangeError, message: /offset order/ },
  );
  for (const range of [
    { offset: -1, length: 1 },
    { offset: 0, length: -1 },
    { offset: Number.NaN, length: 1 },
    { offset: 0.5, length: 1 },
  ]) {
    t.throws(() => clusterRuns([range]), { instanceOf: RangeError }, JSON.stringify(range));
  }
});

test('a chunk split over two write batches is released only once both have landed', async (t) => {
  // 130 + 2 adjacent clusters: the first part closes an 8 MiB batch, the rest goes with
  // the next one. release() scribbles over the chunk, as reused receive memory would.
  const dir = await tempDir(t);
  const virtualSize = 16 * MiB;
  const length = 132 * CLUSTER_SIZE;
  const reference = Buffer.alloc(virtualSize);
  reference.fill(0x5a, 0, length);
  await writeFile(join(dir, 'reference.raw'), reference);
  for (let round = 0; round < 8; round++) {
    const data = Buffer.alloc(length, 0x5a);
    let releases = 0;
    const release = (): void => {
      releases++;
      data.fill(0xee);
    };
    const image = join(dir, `round-${round}.qcow2`);
    await writeQcow2(
      image,
      {
        virtualSize,
        runs: [
          { start: 0, count: 130 },
          { start: 130, count: 2 },
        ],
      },
      chunksOf({ kind: 'data', offset: 0, length, data, release }),
    );
    t.is(releases, 1);
    const compared = await tryRun('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', image, join(dir, 'reference.raw')]);
    t.is(compared.code, 0, `round ${round}: ${compared.stdout}${compared.stderr}`);
  }
});

test('an empty data chunk is released too', async (t) => {
  const dir = await tempDir(t);
  let released = 0;
  const empty: ReadChunk = { kind: 'data', offset: 0, length: 0, data: Buffer.alloc(0), release: () => released++ };
  await writeQcow2(join(dir, 'x.qcow2'), { virtualSize: MiB, runs: [{ start: 0, count: 1 }] }, chunksOf(empty));
  t.is(released, 1);
});

test('data between the planned runs is called outside them, data going backwards out of order', async (t) => {
  const dir = await tempDir(t);
  const runs = [
    { start: 0, count: 1 },
    { start: 3, count: 1 },
  ];
  const data = (offset: number): ReadChunk => ({ kind: 'data', offset, length: 16, data: Buffer.alloc(16, 1) });
  await t.throwsAsync(writeQcow2(join(dir, 'gap.qcow2'), { virtualSize: MiB, runs }, chunksOf(data(0), data(2 * CLUSTER_SIZE))), {
    message: `data at guest offset ${2 * CLUSTER_SIZE} lies outside the planned clusters`,
  });
  await t.throwsAsync(writeQcow2(join(dir, 'back.qcow2'), { virtualSize: MiB, runs }, chunksOf(data(3 * CLUSTER_SIZE), data(0))), {
    message: 'data at guest offset 0 arrived out of order',
  });
  await t.throwsAsync(writeQcow2(join(dir, 'past.qcow2'), { virtualSize: MiB, runs }, chunksOf(data(5 * CLUSTER_SIZE))), {
    message: `data at guest offset ${5 * CLUSTER_SIZE} lies outside the planned clusters`,
  });
});

test('a disk with a thousand L2 tables lets the event loop turn while its metadata is made', async (t) => {
  // One stored cluster at the start of each of 1024 L2 tables: 1024 L2 tables to make.
  const runs = Array.from({ length: 1024 }, (_, i) => ({ start: i * (CLUSTER_SIZE / 8), count: 1 }));
  const layout = planQcow2({ virtualSize: 1024 * (CLUSTER_SIZE / 8) * CLUSTER_SIZE, runs });
  let turns = 0;
  let counting = true;
  const count = (): void => {
    turns++;
    if (counting) setImmediate(count);
  };
  setImmediate(count);
  // Clusters made since the event loop last turned, at most.
  let longestRun = 0;
  let run = 0;
  let lastTurn = turns;
  let clusters = 0;
  for await (const cluster of metadataInTurns(layout)) {
    t.is(cluster.length, CLUSTER_SIZE);
    clusters++;
    run = turns === lastTurn ? run + 1 : 1;
    lastTurn = turns;
    longestRun = Math.max(longestRun, run);
  }
  counting = false;
  t.is(clusters, layout.dataOffset / CLUSTER_SIZE);
  t.true(clusters > 1024);
  t.true(longestRun <= 16, `${longestRun} metadata clusters made without a turn of the event loop`);
});
