/**
 * A plain reading of the metadata clusters planQcow2 and metadataClusters produce, with
 * the rules of qemu's docs/interop/qcow2.txt written out: header fields, L1 and L2
 * tables, refcount table and blocks. It follows every pointer, and says what is wrong
 * (or nothing) about the image those clusters begin. Data clusters are not needed: the
 * L2 entries say where they go, and that is what is checked.
 */
import type { ClusterRun, Qcow2Layout } from '../../src/backup/qcow2/qcow2-layout.js';

const CLUSTER = 65536;
const L2_ENTRIES = CLUSTER / 8;
const COPIED = 1n << 63n;
const OFFSET_MASK = 0x00ff_ffff_ffff_fe00n;

export function checkMetadata(metadata: Buffer, layout: Qcow2Layout): string | undefined {
  const { input } = layout;
  const u32 = (at: number): number => metadata.readUInt32BE(at);
  const u64 = (at: number): bigint => metadata.readBigUInt64BE(at);
  if (metadata.length !== layout.dataOffset) return `metadata is ${metadata.length} bytes, the layout puts data at ${layout.dataOffset}`;
  if (layout.fileSize !== layout.totalClusters * CLUSTER) return 'file size is not the clusters it holds';

  // Header (version 3).
  if (u32(0) !== 0x514649fb || u32(4) !== 3) return 'bad magic or version';
  if (u32(20) !== 16) return 'cluster bits are not 16';
  if (u64(24) !== BigInt(input.virtualSize)) return `header size ${u64(24)} is not ${input.virtualSize}`;
  if (u32(96) !== 4 || u32(100) !== 104) return 'refcount order or header length';
  const guestClusters = Math.ceil(input.virtualSize / CLUSTER);
  const l1Size = u32(36);
  if (l1Size < Math.ceil(guestClusters / L2_ENTRIES)) return `L1 of ${l1Size} entries cannot map ${guestClusters} clusters`;
  if (l1Size > 2 ** 22) return 'L1 larger than qemu opens';
  const backingOffset = Number(u64(8));
  const backingSize = u32(16);
  if (input.backingFile === undefined) {
    if (backingOffset !== 0 || backingSize !== 0) return 'a backing file nobody asked for';
  } else {
    if (backingSize === 0 || backingSize > 1023 || backingOffset + backingSize > CLUSTER) return 'backing file name out of bounds';
    if (metadata.toString('utf8', backingOffset, backingOffset + backingSize) !== input.backingFile) return 'backing file name differs';
  }
  // Header extensions, up to the end marker: the backing format, if any.
  let at = 104;
  let format: string | undefined;
  for (;;) {
    const type = u32(at);
    const length = u32(at + 4);
    if (type === 0) break;
    if (type === 0xe2792aca) format = metadata.toString('utf8', at + 8, at + 8 + length);
    at += 8 + Math.ceil(length / 8) * 8;
    if (at > CLUSTER) return 'header extensions run off the header';
  }
  if (input.backingFile !== undefined && input.backingFormat !== undefined && format !== input.backingFormat) return 'backing format differs';
  if (input.backingFile !== undefined && backingOffset < at + 8) return 'backing file name overlaps the extensions';

  const total = layout.totalClusters;
  // Who uses each cluster: an index into `roles` (0 = nobody yet).
  const roles: string[] = ['nobody'];
  const owners = new Uint32Array(total);
  let used = 0;
  const claim = (cluster: number, what: string): string | undefined => {
    if (!Number.isInteger(cluster) || cluster < 0 || cluster >= total) return `${what} points at cluster ${cluster}, outside the file's ${total}`;
    if (owners[cluster] !== 0) return `cluster ${cluster} is both ${roles[owners[cluster]!]} and ${what}`;
    if (roles.at(-1) !== what) roles.push(what);
    owners[cluster] = roles.length - 1;
    used++;
    return undefined;
  };
  const toCluster = (entry: bigint): number => Number((entry & OFFSET_MASK) / BigInt(CLUSTER));
  let problem = claim(0, 'header');
  if (problem) return problem;

  // L1 and the L2 tables it points at: guest cluster -> host cluster.
  const l1Offset = Number(u64(40));
  if (l1Offset % CLUSTER !== 0) return 'L1 not cluster aligned';
  for (let c = 0; c < Math.ceil((l1Size * 8) / CLUSTER); c++) if ((problem = claim(l1Offset / CLUSTER + c, 'L1'))) return problem;
  const mapped: Array<[number, number]> = [];
  for (let i = 0; i < l1Size; i++) {
    const entry = u64(l1Offset + 8 * i);
    if (entry === 0n) continue;
    if ((entry & COPIED) === 0n) return `L1[${i}] without the copied flag`;
    const l2 = toCluster(entry);
    if ((problem = claim(l2, `L2 of L1[${i}]`))) return problem;
    for (let j = 0; j < L2_ENTRIES; j++) {
      const l2Entry = u64(l2 * CLUSTER + 8 * j);
      if (l2Entry === 0n) continue;
      if ((l2Entry & COPIED) === 0n) return `L2 entry for guest cluster ${i * L2_ENTRIES + j} without the copied flag`;
      const guest = i * L2_ENTRIES + j;
      if (guest >= guestClusters) return `guest cluster ${guest} mapped past the disk`;
      mapped.push([guest, toCluster(l2Entry)]);
    }
  }
  // Exactly the planned clusters, in guest order, each in a data cluster of its own.
  const planned: number[] = [];
  for (const run of input.runs as ClusterRun[]) for (let c = run.start; c < run.start + run.count; c++) planned.push(c);
  if (mapped.length !== planned.length) return `${mapped.length} guest clusters mapped, ${planned.length} planned`;
  for (let k = 0; k < mapped.length; k++) {
    const [guest, host] = mapped[k]!;
    if (guest !== planned[k]) return `guest cluster ${guest} mapped where ${planned[k]} was planned`;
    if (host !== layout.dataOffset / CLUSTER + k) return `guest cluster ${guest} in host cluster ${host}, not in guest order`;
    if ((problem = claim(host, `data of guest cluster ${guest}`))) return problem;
  }

  // Refcount table and blocks: every cluster of the file counted once, nothing beyond.
  const tableOffset = Number(u64(48));
  const tableClusters = u32(56);
  for (let c = 0; c < tableClusters; c++) if ((problem = claim(tableOffset / CLUSTER + c, 'refcount table'))) return problem;
  const perBlock = CLUSTER / 2;
  let blocks = 0;
  for (let b = 0; b < (tableClusters * CLUSTER) / 8; b++) if (u64(tableOffset + 8 * b) !== 0n) blocks = b + 1;
  const refcount = new Uint16Array(blocks * perBlock);
  for (let b = 0; b < blocks; b++) {
    const entry = u64(tableOffset + 8 * b);
    if (entry === 0n) continue;
    const block = Number(entry) / CLUSTER;
    if ((problem = claim(block, `refcount block ${b}`))) return problem;
    for (let i = 0; i < perBlock; i++) refcount[b * perBlock + i] = metadata.readUInt16BE(block * CLUSTER + 2 * i);
  }
  if (used !== total) return `${used} clusters in use, the file has ${total}`;
  if (refcount.length < total) return `refcount blocks cover ${refcount.length} clusters of ${total}`;
  for (let cluster = 0; cluster < refcount.length; cluster++) {
    const wanted = cluster < total ? 1 : 0;
    if (refcount[cluster] !== wanted)
      return `cluster ${cluster} (${roles[owners[cluster] ?? 0] ?? 'past the end'}) has refcount ${refcount[cluster]}, not ${wanted}`;
  }
  return undefined;
}
