// The memory a chain read in guest order hands out: filled again only once the consumer
// gives it back, never while someone may still read it.
import { join } from 'node:path';
import test from 'ava';
import { OpenedChain } from '../../src/backup/restore/chain-restore.js';
import type { GuestRun } from '../../src/backup/qcow2/chain-guest-stream.js';
import { CLUSTER_SIZE } from '../../src/backup/qcow2/qcow2-layout.js';
import { imageLayout, qcow2ImageChunks } from '../../src/backup/qcow2/qcow2-image-stream.js';
import { tempDir } from './helpers.js';
import { MiB, createImage, describeChain, qemuImgRaw, qemuIo } from './qcow2-helpers.js';

/** A 40 MiB image holding 36 MiB of distinct patterns (several 4 MiB runs) and the raw bytes qemu-img reads from it. */
async function patternedImage(dir: string): Promise<{ path: string; reference: Buffer }> {
  const path = join(dir, 'disk.qcow2');
  await createImage({ path, size: 40 * MiB });
  await qemuIo(
    path,
    Array.from({ length: 9 }, (_, index) => `write -P ${0x11 + index} ${index * 4}M 4M`),
  );
  return { path, reference: await qemuImgRaw(path, dir) };
}

async function openGuestOrdered(path: string): Promise<{ runs: AsyncGenerator<GuestRun>; close: () => Promise<void> }> {
  const chain = await OpenedChain.open(await describeChain([path]));
  return { runs: chain.guestOrdered({}).runs(), close: () => chain.close() };
}

test('runs given back are filled again, and each still held the right bytes when it was handed out', async (t) => {
  const dir = await tempDir(t);
  const { path, reference } = await patternedImage(dir);
  const { runs, close } = await openGuestOrdered(path);
  t.teardown(close);
  const memories = new Set<ArrayBufferLike>();
  let dataRuns = 0;
  for await (const run of runs) {
    if (run.kind !== 'data') continue;
    dataRuns++;
    t.true(run.data.equals(reference.subarray(run.offset, run.offset + run.data.length)), `bytes at ${run.offset}`);
    memories.add(run.data.buffer);
    run.release();
    run.release();
  }
  t.true(dataRuns >= 9, `${dataRuns} data runs`);
  t.is(memories.size, 1, 'one piece of memory served every run');
});

test('runs kept without being given back are never written again', async (t) => {
  const dir = await tempDir(t);
  const { path, reference } = await patternedImage(dir);
  const { runs, close } = await openGuestOrdered(path);
  t.teardown(close);
  const kept: Array<{ offset: number; data: Buffer }> = [];
  for await (const run of runs) if (run.kind === 'data') kept.push(run);
  t.is(new Set(kept.map((run) => run.data.buffer)).size, kept.length, 'each run has memory of its own');
  for (const run of kept) t.true(run.data.equals(reference.subarray(run.offset, run.offset + run.data.length)), `bytes at ${run.offset}, read after the end`);
});

test('a run that fills two stored ranges of an image goes back only when both pieces are released', async (t) => {
  const layout = imageLayout(4 * CLUSTER_SIZE, [
    { start: 0, count: 1 },
    { start: 1, count: 1 },
  ]);
  let released = 0;
  const data = Buffer.alloc(2 * CLUSTER_SIZE, 0x5a);
  async function* runs(): AsyncGenerator<GuestRun> {
    yield { kind: 'data', offset: 0, data, release: () => released++ };
  }
  const pieces = [];
  for await (const chunk of qcow2ImageChunks(layout, runs())) if (chunk.kind === 'data' && chunk.release !== undefined) pieces.push(chunk);
  t.is(pieces.length, 2, 'the run went out in two pieces');
  t.is(released, 0, 'nothing given back while both pieces are out');
  pieces[1]!.release!();
  pieces[1]!.release!();
  t.is(released, 0, 'one piece released (twice) does not free the run');
  pieces[0]!.release!();
  t.is(released, 1, 'the run goes back once, with its last piece');
});
