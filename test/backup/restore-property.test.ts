// Property: for any chain of 2-4 qcow2 layers that QEMU's tools wrote (random writes,
// zero writes, discards and compressed writes, mixed cluster sizes and versions), our
// one-pass restore gives what `qemu-img convert` gives, raw byte for byte and qcow2 as
// judged by `qemu-img compare` and `qemu-img check`.
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import fc from 'fast-check';
import { tempDir } from './helpers.js';
import { KiB, MiB, assertProperty, createImage, imageInfo, qemuImgCheckClean, qemuImgCompare, qemuImgRaw, qemuIo, restorePaths } from './qcow2-helpers.js';

type Operation =
  | { kind: 'write'; offset: number; length: number; source: number }
  | { kind: 'zero'; offset: number; length: number; unmap: boolean }
  | { kind: 'discard'; offset: number; length: number }
  | { kind: 'compressed'; cluster: number; source: number };

interface LayerSpec {
  size: number;
  clusterSize: number;
  compat: '1.1' | '0.10';
  operations: Operation[];
}

const SECTOR = 512;
const SIZES = [MiB, 2 * MiB, 2 * MiB + 3 * SECTOR];
const CLUSTER_SIZES = [SECTOR, 4 * KiB, 64 * KiB];
/** Random fill files; index 0-3 are random bytes, 4-255 a qemu-io pattern byte. */
const SOURCES = 4;

const operation = (size: number, clusterSize: number): fc.Arbitrary<Operation> => {
  const sectors = size / SECTOR;
  const range = fc
    .tuple(fc.integer({ min: 0, max: Math.floor(sectors) - 1 }), fc.integer({ min: 1, max: 512 }))
    .map(([start, count]) => ({ offset: start * SECTOR, length: Math.min(count, Math.floor(sectors) - start) * SECTOR }));
  const fullClusters = Math.floor(size / clusterSize);
  return fc.oneof(
    { weight: 4, arbitrary: fc.tuple(range, fc.integer({ min: 0, max: 255 })).map(([r, source]) => ({ kind: 'write' as const, ...r, source })) },
    { weight: 2, arbitrary: fc.tuple(range, fc.boolean()).map(([r, unmap]) => ({ kind: 'zero' as const, ...r, unmap })) },
    { weight: 1, arbitrary: range.map((r) => ({ kind: 'discard' as const, ...r })) },
    {
      weight: 1,
      arbitrary: fc
        .tuple(fc.integer({ min: 0, max: Math.max(0, fullClusters - 1) }), fc.integer({ min: 0, max: 255 }))
        .map(([cluster, source]) => ({ kind: 'compressed' as const, cluster, source })),
    },
  );
};

const layer: fc.Arbitrary<LayerSpec> = fc
  .record({ size: fc.constantFrom(...SIZES), clusterSize: fc.constantFrom(...CLUSTER_SIZES), compat: fc.constantFrom('1.1' as const, '0.10' as const) })
  .chain(({ size, clusterSize, compat }) =>
    fc.array(operation(size, clusterSize), { minLength: 1, maxLength: 8 }).map((operations) => ({ size, clusterSize, compat, operations })),
  );

function qemuIoCommand(operation: Operation, clusterSize: number, sources: readonly string[]): string {
  const fill = (source: number) => (source < SOURCES ? `-s ${sources[source]}` : `-P ${source}`);
  switch (operation.kind) {
    case 'write':
      return `write ${fill(operation.source)} ${operation.offset} ${operation.length}`;
    case 'zero':
      return `write -z ${operation.unmap ? '-u ' : ''}${operation.offset} ${operation.length}`;
    case 'discard':
      return `discard ${operation.offset} ${operation.length}`;
    case 'compressed':
      return `write -c ${fill(operation.source)} ${operation.cluster * clusterSize} ${clusterSize}`;
  }
}

test('restores of random chains equal qemu-img convert, raw and qcow2', async (t) => {
  const root = await tempDir(t, 'restore-property-');
  const sources: string[] = [];
  for (let index = 0; index < SOURCES; index++) {
    const path = join(root, `source-${index}.bin`);
    await writeFile(path, randomBytes(4 * MiB));
    sources.push(path);
  }
  let cases = 0;
  let compressedLayers = 0;
  await assertProperty(
    fc.asyncProperty(fc.array(layer, { minLength: 2, maxLength: 4 }), async (layers) => {
      const dir = join(root, `case-${cases++}`);
      await mkdir(dir);
      try {
        const paths: string[] = [];
        for (const [index, spec] of layers.entries()) {
          const path = join(dir, `layer-${index}.qcow2`);
          await createImage({ path, size: spec.size, backing: paths.at(-1), options: { cluster_size: String(spec.clusterSize), compat: spec.compat } });
          // QEMU writes compressed clusters only where nothing is allocated yet, whole clusters
          // inside the disk: those go first, once per cluster.
          const compressedClusters = new Set<number>();
          const compressed = spec.operations.filter((op) => {
            if (op.kind !== 'compressed' || (op.cluster + 1) * spec.clusterSize > spec.size || compressedClusters.has(op.cluster)) return false;
            compressedClusters.add(op.cluster);
            return true;
          });
          const commands = [...compressed, ...spec.operations.filter((op) => op.kind !== 'compressed')];
          await qemuIo(
            path,
            commands.map((op) => qemuIoCommand(op, spec.clusterSize, sources)),
          );
          if (commands.some((op) => op.kind === 'compressed')) compressedLayers++;
          paths.push(path);
        }
        const top = paths.at(-1)!;
        const reference = await qemuImgRaw(top, dir);
        const raw = join(dir, 'restored.raw');
        const report = await restorePaths(paths, raw, { format: 'raw' });
        if (report.method !== 'one-pass') throw new Error(`restored by ${report.method}`);
        const restored = await readFile(raw);
        if (!restored.equals(reference)) {
          const first = restored.findIndex((byte, index) => byte !== reference[index]);
          throw new Error(`raw output differs from qemu-img convert's (${restored.length} and ${reference.length} bytes), first at ${first}`);
        }
        const qcow2 = join(dir, 'restored.qcow2');
        await restorePaths(paths, qcow2, { format: 'qcow2' });
        const compared = await qemuImgCompare(qcow2, top);
        if (!compared.identical) throw new Error(`qcow2 output differs: ${compared.message}`);
        const check = await qemuImgCheckClean(qcow2);
        if (!check.clean) throw new Error(`qcow2 output fails qemu-img check: ${check.report}`);
        const backing = (await imageInfo(qcow2))['backing-filename'];
        if (backing !== undefined) throw new Error(`qcow2 output has a backing file: ${String(backing)}`);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    }),
    { numRuns: 40, endOnFailure: true },
  );
  t.log(`${cases} random chains restored (${compressedLayers} layers with compressed clusters), each compared with qemu-img convert in raw and qcow2`);
  console.log(`restore property: ${cases} cases`);
  t.true(cases >= 40);
});
