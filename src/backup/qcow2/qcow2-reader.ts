// Reads the guest mapping of a qcow2 image (versions 2 and 3, as QEMU and our own
// writer produce them): header, header extensions, backing file name, and the active
// L1/L2 tables turned into a guest-ordered list of extents (data, zero, compressed).
// Refcounts and internal snapshots play no part in what the guest reads, so they are
// not read. Every offset and size taken from the file is checked against the file's
// size and the specification before it is used: a damaged or hostile file ends in a
// BackupSetError, CHAIN_BROKEN when it is malformed, IMAGE_UNSUPPORTED when it is
// valid qcow2 using something this reader does not do.
import type { FileHandle } from 'node:fs/promises';
import { BackupSetError, throwIfAborted } from '../errors.js';
import { decompressCluster, type ClusterCompression } from './cluster-compression.js';

/** Positioned reads of a file of known size. */
export interface ByteSource {
  readonly size: number;
  /** Exactly `length` bytes at `position`; callers keep the range inside `size`. */
  read(position: number, length: number): Promise<Buffer>;
}

/** A source over an open file; `onRead` hears how many bytes each read returned. */
export function fileByteSource(handle: FileHandle, size: number, onRead?: (bytes: number) => void): ByteSource {
  return {
    size,
    async read(position, length) {
      const buffer = Buffer.allocUnsafe(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await handle.read(buffer, done, length - done, position + done);
        if (bytesRead === 0) throw new Error(`file ended at ${position + done}, ${length - done} bytes short of what was asked`);
        done += bytesRead;
        onRead?.(bytesRead);
      }
      return buffer;
    },
  };
}

export function bufferByteSource(bytes: Uint8Array): ByteSource {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return { size: buffer.length, read: async (position, length) => buffer.subarray(position, position + length) };
}

export interface Qcow2Header {
  version: 2 | 3;
  clusterBits: number;
  clusterSize: number;
  virtualSize: number;
  l1Entries: number;
  l1Offset: number;
  /** As stored in the header (relative names stay relative), or null. */
  backingFile: string | null;
  backingFormat: string | null;
  /** How compressed clusters are compressed (qcow2's compression_type; zlib when the header has none). */
  compression: ClusterCompression;
}

export const EXTENT_DATA = 0;
export const EXTENT_ZERO = 1;
export const EXTENT_COMPRESSED = 2;
export type ExtentKind = typeof EXTENT_DATA | typeof EXTENT_ZERO | typeof EXTENT_COMPRESSED;

/**
 * Guest ranges an image itself answers for, in guest order, not overlapping. Stored as
 * columns: an image can map millions of clusters, and objects per cluster would cost
 * many times the metadata they come from. Data extents are merged when contiguous in
 * guest and host; zero extents when contiguous in guest; a compressed extent is one
 * cluster. Ranges not listed are unallocated: they read from the backing file.
 */
export class GuestExtents {
  count = 0;
  kind = new Uint8Array(16);
  guestOffset = new Float64Array(16);
  length = new Float64Array(16);
  /** Data: file offset of the first byte. Compressed: file offset of the deflate stream. */
  hostOffset = new Float64Array(16);
  /** Compressed: bytes of the deflate stream that lie inside the file. */
  compressedLength = new Float64Array(16);

  push(kind: ExtentKind, guestOffset: number, length: number, hostOffset = 0, compressedLength = 0): void {
    const last = this.count - 1;
    if (last >= 0 && kind !== EXTENT_COMPRESSED && this.kind[last] === kind && this.guestOffset[last]! + this.length[last]! === guestOffset) {
      if (kind === EXTENT_ZERO || this.hostOffset[last]! + this.length[last]! === hostOffset) {
        this.length[last]! += length;
        return;
      }
    }
    if (this.count === this.kind.length) this.grow();
    const index = this.count++;
    this.kind[index] = kind;
    this.guestOffset[index] = guestOffset;
    this.length[index] = length;
    this.hostOffset[index] = hostOffset;
    this.compressedLength[index] = compressedLength;
  }

  private grow(): void {
    const size = this.kind.length * 2;
    const widen = <T extends Float64Array | Uint8Array>(old: T, fresh: T): T => {
      fresh.set(old);
      return fresh;
    };
    this.kind = widen(this.kind, new Uint8Array(size));
    this.guestOffset = widen(this.guestOffset, new Float64Array(size));
    this.length = widen(this.length, new Float64Array(size));
    this.hostOffset = widen(this.hostOffset, new Float64Array(size));
    this.compressedLength = widen(this.compressedLength, new Float64Array(size));
  }
}

export interface Qcow2Image {
  header: Qcow2Header;
  extents: GuestExtents;
  fileSize: number;
}

const MAGIC = 0x514649fb; // "QFI\xfb"
const V2_HEADER_LENGTH = 72;
const V3_HEADER_LENGTH = 104;
const MIN_CLUSTER_BITS = 9;
/** QEMU's limit too: it cannot open images with larger clusters. */
const MAX_CLUSTER_BITS = 21;
/** QEMU's limit on the active L1 table (32 MiB), which also bounds what we read for it. */
const MAX_L1_ENTRIES = (32 * 2 ** 20) / 8;
const MAX_BACKING_NAME = 1023;
/** Offsets become JavaScript numbers: 8 PiB is far beyond any disk and still exact. */
const MAX_SAFE_SIZE = 2 ** 53;

const EXTENSION_END = 0x00000000;
const EXTENSION_BACKING_FORMAT = 0xe2792aca;
const EXTENSION_FEATURE_NAMES = 0x6803f857;

const INCOMPATIBLE_DIRTY = 0;
const INCOMPATIBLE_CORRUPT = 1;
const INCOMPATIBLE_EXTERNAL_DATA = 2;
const INCOMPATIBLE_COMPRESSION_TYPE = 3;
const INCOMPATIBLE_EXTENDED_L2 = 4;

const AUTOCLEAR_RAW_EXTERNAL_DATA = 1n << 1n;
/** QEMU's limit on the refcount table. */
const MAX_REFCOUNT_TABLE_BYTES = 8 * 2 ** 20;

const COMPRESSION_TYPES: Record<number, ClusterCompression> = { 0: 'zlib', 1: 'zstd' };

const TWO_32 = 2 ** 32;

function malformed(name: string, message: string): BackupSetError {
  return new BackupSetError('CHAIN_BROKEN', `${name}: ${message}`);
}

function unsupported(name: string, message: string): BackupSetError {
  return new BackupSetError('IMAGE_UNSUPPORTED', `${name}: ${message}`);
}

/** A big-endian u64 as a number, or null when it does not fit exactly. */
function readU64(buffer: Buffer, at: number): number | null {
  const value = buffer.readBigUInt64BE(at);
  return value <= BigInt(MAX_SAFE_SIZE) ? Number(value) : null;
}

interface HeaderFields {
  header: Qcow2Header;
  incompatible: bigint;
  cryptMethod: number;
  compressionType: number;
  featureNames: Map<number, string>;
}

/** Reads and validates the header, its extensions and the backing file name. */
export async function readQcow2Header(source: ByteSource, name: string): Promise<Qcow2Header> {
  const fields = await readHeaderFields(source, name);
  assertSupported(fields, name);
  return fields.header;
}

async function readHeaderFields(source: ByteSource, name: string): Promise<HeaderFields> {
  const fileSize = source.size;
  if (fileSize < V2_HEADER_LENGTH) throw malformed(name, `the file is ${fileSize} bytes, too short for a qcow2 header`);
  const fixed = await source.read(0, Math.min(fileSize, V3_HEADER_LENGTH));
  if (fixed.readUInt32BE(0) !== MAGIC) throw malformed(name, 'not a qcow2 image (no QFI\\xfb magic at offset 0)');
  const version = fixed.readUInt32BE(4);
  if (version !== 2 && version !== 3) throw unsupported(name, `qcow2 version ${version} is not supported (only 2 and 3 are)`);
  const clusterBits = fixed.readUInt32BE(20);
  if (clusterBits < MIN_CLUSTER_BITS) throw malformed(name, `cluster_bits is ${clusterBits}; qcow2 clusters are at least 512 bytes (9 bits)`);
  if (clusterBits > MAX_CLUSTER_BITS) throw unsupported(name, `clusters of 2^${clusterBits} bytes are larger than the 2 MiB QEMU supports`);
  const clusterSize = 2 ** clusterBits;

  let headerLength = V2_HEADER_LENGTH;
  let incompatible = 0n;
  let autoclear = 0n;
  let compressionType = 0;
  if (version === 3) {
    if (fileSize < V3_HEADER_LENGTH) throw malformed(name, `the file is ${fileSize} bytes, too short for a version 3 header`);
    headerLength = fixed.readUInt32BE(100);
    if (headerLength < V3_HEADER_LENGTH || headerLength % 8 !== 0 || headerLength > clusterSize) {
      throw malformed(name, `header_length ${headerLength} is not a multiple of 8 between ${V3_HEADER_LENGTH} and the cluster size ${clusterSize}`);
    }
    incompatible = fixed.readBigUInt64BE(72);
    autoclear = fixed.readBigUInt64BE(88);
    const refcountOrder = fixed.readUInt32BE(96);
    if (refcountOrder > 6) throw malformed(name, `refcount_order ${refcountOrder} is above the maximum of 6`);
  }
  const headerCluster = await source.read(0, Math.min(fileSize, clusterSize));
  if (headerLength > V3_HEADER_LENGTH) {
    if (headerCluster.length <= V3_HEADER_LENGTH) throw malformed(name, `the file ends inside its ${headerLength}-byte header`);
    compressionType = headerCluster[V3_HEADER_LENGTH]!;
  }

  const sizeField = readU64(fixed, 24);
  if (sizeField === null) throw unsupported(name, 'virtual size above 8 PiB is not supported');
  // QEMU sees whole 512-byte sectors only, and so does everything that reads the image through it.
  const virtualSize = sizeField - (sizeField % 512);
  const cryptMethod = fixed.readUInt32BE(32);
  const l1Entries = fixed.readUInt32BE(36);

  // The backing file name sits after the extensions, inside the first cluster.
  const { backingFile, extensionsEnd } = readBackingFileName(fixed, headerCluster, clusterSize, name);

  const { backingFormat, featureNames } = parseExtensions(headerCluster, headerLength, extensionsEnd, fileSize, name);
  // The chain is read as qcow2 all the way down: a backing file named as anything else is
  // not what this reader can read, and a name QEMU does not know makes QEMU refuse the image.
  if (backingFile !== null && backingFormat !== null && backingFormat !== 'qcow2')
    throw malformed(name, `backing file format is ${JSON.stringify(backingFormat)}, expected qcow2`);

  assertTablesQemuOpens(fixed, clusterSize, incompatible, autoclear, name);

  const l1Offset = readL1Offset(fixed, l1Entries, sizeField, clusterSize, fileSize, name);

  return {
    header: {
      version,
      clusterBits,
      clusterSize,
      virtualSize,
      l1Entries,
      l1Offset,
      backingFile,
      backingFormat,
      compression: COMPRESSION_TYPES[compressionType] ?? 'zlib',
    },
    incompatible,
    cryptMethod,
    compressionType,
    featureNames,
  };
}

/** The backing file name, and where the header extensions end (where the name starts, or the first cluster's end). */
function readBackingFileName(fixed: Buffer, headerCluster: Buffer, clusterSize: number, name: string): { backingFile: string | null; extensionsEnd: number } {
  const backingOffset = readU64(fixed, 8);
  if (backingOffset === 0) return { backingFile: null, extensionsEnd: clusterSize };
  const length = fixed.readUInt32BE(16);
  if (backingOffset === null || backingOffset > clusterSize) throw malformed(name, 'the backing file name does not start inside the header cluster');
  if (length > MAX_BACKING_NAME || length > clusterSize - backingOffset) throw malformed(name, `backing file name of ${length} bytes is too long`);
  if (backingOffset + length > headerCluster.length) throw malformed(name, `the file ends inside its backing file name (${headerCluster.length} bytes)`);
  return { backingFile: headerCluster.toString('utf8', backingOffset, backingOffset + length), extensionsEnd: backingOffset };
}

/**
 * Refcounts play no part in reading, but an image whose refcount structures QEMU
 * would refuse to open is not one to trust either.
 */
function assertTablesQemuOpens(fixed: Buffer, clusterSize: number, incompatible: bigint, autoclear: bigint, name: string): void {
  const refcountTableOffset = readU64(fixed, 48);
  const refcountTableClusters = fixed.readUInt32BE(56);
  if (refcountTableClusters === 0) throw malformed(name, 'the image has no refcount table');
  if (refcountTableClusters > MAX_REFCOUNT_TABLE_BYTES / clusterSize)
    throw malformed(name, `a refcount table of ${refcountTableClusters} clusters is larger than the ${MAX_REFCOUNT_TABLE_BYTES} bytes QEMU allows`);
  if (refcountTableOffset === null || refcountTableOffset % clusterSize !== 0)
    throw malformed(name, `refcount table offset ${fixed.readBigUInt64BE(48)} is not cluster aligned`);
  // Internal snapshots are never in a backup set; qemu-img handles images that have them.
  const snapshots = fixed.readUInt32BE(60);
  const snapshotsOffset = readU64(fixed, 64);
  if (snapshotsOffset === null || snapshotsOffset % clusterSize !== 0)
    throw malformed(name, `snapshot table offset ${fixed.readBigUInt64BE(64)} is not cluster aligned`);
  if (snapshots !== 0) throw unsupported(name, `the image holds ${snapshots} internal snapshot${snapshots === 1 ? '' : 's'}`);
  if ((autoclear & AUTOCLEAR_RAW_EXTERNAL_DATA) !== 0n && (incompatible & (1n << BigInt(INCOMPATIBLE_EXTERNAL_DATA))) === 0n) {
    throw malformed(name, 'the raw external data bit is set without an external data file');
  }
}

/** The L1 table's offset, once it is known to lie inside the file and to be large enough for the virtual size. */
function readL1Offset(fixed: Buffer, l1Entries: number, sizeField: number, clusterSize: number, fileSize: number, name: string): number {
  const l1Offset = readU64(fixed, 40);
  if (l1Offset === null || l1Offset % clusterSize !== 0) throw malformed(name, `L1 table offset ${fixed.readBigUInt64BE(40)} is not cluster aligned`);
  if (l1Entries > MAX_L1_ENTRIES) throw unsupported(name, `L1 table of ${l1Entries} entries is larger than the ${MAX_L1_ENTRIES} QEMU supports`);
  // QEMU sizes the L1 table from the header's size as written, before it drops a partial
  // last sector: an image whose L1 only covers the rounded-down size is one it refuses.
  const guestClusters = Math.ceil(sizeField / clusterSize);
  const l2Entries = clusterSize / 8;
  const l1Needed = Math.ceil(guestClusters / l2Entries);
  if (l1Entries < l1Needed)
    throw malformed(name, `the L1 table has ${l1Entries} entries, a virtual size of ${sizeField - (sizeField % 512)} bytes needs ${l1Needed}`);
  if (l1Needed > 0 && l1Offset + l1Needed * 8 > fileSize)
    throw malformed(name, `the L1 table at ${l1Offset} runs past the end of the file (${fileSize} bytes)`);
  return l1Offset;
}

function parseExtensions(
  headerCluster: Buffer,
  start: number,
  end: number,
  fileSize: number,
  name: string,
): { backingFormat: string | null; featureNames: Map<number, string> } {
  let backingFormat: string | null = null;
  const featureNames = new Map<number, string>();
  let at = start;
  // Each pass moves at least 8 bytes forward inside one cluster: the loop is bounded.
  while (at < end) {
    const dataStart = at + 8;
    if (dataStart > end) throw malformed(name, `header extension at ${at} runs past the header area`);
    if (dataStart > headerCluster.length) throw malformed(name, `the file ends inside its header extensions (${fileSize} bytes)`);
    const type = headerCluster.readUInt32BE(at);
    const length = headerCluster.readUInt32BE(at + 4);
    if (length > end - dataStart) throw malformed(name, `header extension 0x${type.toString(16)} of ${length} bytes runs past the header area`);
    if (type === EXTENSION_END) break;
    if (dataStart + length > headerCluster.length) throw malformed(name, `the file ends inside its header extensions (${fileSize} bytes)`);
    if (type === EXTENSION_BACKING_FORMAT) backingFormat = headerCluster.toString('utf8', dataStart, dataStart + length);
    if (type === EXTENSION_FEATURE_NAMES) {
      for (let entry = dataStart; entry + 48 <= dataStart + length; entry += 48) {
        if (headerCluster[entry] !== 0) continue; // only incompatible features matter here
        const raw = headerCluster.subarray(entry + 2, entry + 48);
        const nul = raw.indexOf(0);
        featureNames.set(headerCluster[entry + 1]!, raw.toString('utf8', 0, nul === -1 ? raw.length : nul));
      }
    }
    at = dataStart + Math.ceil(length / 8) * 8;
  }
  return { backingFormat, featureNames };
}

function assertSupported(fields: HeaderFields, name: string): void {
  const { incompatible, cryptMethod, compressionType, featureNames } = fields;
  const has = (bit: number) => (incompatible & (1n << BigInt(bit))) !== 0n;
  if (has(INCOMPATIBLE_CORRUPT)) throw unsupported(name, 'the image is marked corrupt (incompatible feature "corrupt"); `qemu-img check -r all` may repair it');
  if (has(INCOMPATIBLE_DIRTY)) throw unsupported(name, 'the image is marked dirty (incompatible feature "dirty": its refcounts may be stale)');
  if (has(INCOMPATIBLE_EXTERNAL_DATA)) throw unsupported(name, 'the image keeps its data in an external data file (incompatible feature "external data file")');
  if (has(INCOMPATIBLE_EXTENDED_L2)) throw unsupported(name, 'the image uses extended L2 entries (incompatible feature "extended L2", subclusters)');
  if (has(INCOMPATIBLE_COMPRESSION_TYPE)) {
    if (compressionType === 0) throw malformed(name, 'the compression type feature bit is set but compression_type is 0 (zlib)');
    if (COMPRESSION_TYPES[compressionType] === undefined)
      throw unsupported(
        name,
        `compressed clusters use compression type ${compressionType} (incompatible feature "compression type"); only zlib and zstd are supported`,
      );
  } else if (compressionType !== 0) throw malformed(name, `compression_type is ${compressionType} but the compression type feature bit is clear`);
  const unknown: string[] = [];
  for (let bit = 5; bit < 64; bit++) {
    if (has(bit)) unknown.push(featureNames.has(bit) ? `"${featureNames.get(bit)}" (bit ${bit})` : `bit ${bit}`);
  }
  if (unknown.length > 0)
    throw unsupported(name, `the image uses incompatible feature${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')} unknown to this reader`);
  if (cryptMethod !== 0)
    throw unsupported(
      name,
      `the image is encrypted (${cryptMethod === 1 ? 'AES' : cryptMethod === 2 ? 'LUKS' : `method ${cryptMethod}`}); decrypt it with qemu-img first`,
    );
}

/**
 * Reads an image's header and active mapping. Memory stays proportional to the file:
 * each L2 table is read once (a table named twice is refused), so there are at most
 * fileSize / 8 entries to list.
 */
export async function readQcow2Image(source: ByteSource, name: string, options: { signal?: AbortSignal } = {}): Promise<Qcow2Image> {
  const header = await readQcow2Header(source, name);
  const { clusterSize, clusterBits, virtualSize } = header;
  const fileSize = source.size;
  const l2Entries = clusterSize / 8;
  const guestClusters = Math.ceil(virtualSize / clusterSize);
  const l1Needed = Math.ceil(guestClusters / l2Entries);
  const extents = new GuestExtents();
  if (l1Needed === 0) return { header, extents, fileSize };

  const l1 = await source.read(header.l1Offset, l1Needed * 8);
  const seenTables = new Uint8Array(Math.ceil(fileSize / clusterSize / 8));
  const compressedOffsetBits = 62 - (clusterBits - 8);
  for (let l1Index = 0; l1Index < l1Needed; l1Index++) {
    throwIfAborted(options.signal);
    const high = l1.readUInt32BE(l1Index * 8);
    const low = l1.readUInt32BE(l1Index * 8 + 4);
    const firstGuest = l1Index * l2Entries * clusterSize;
    if ((low & 0x1ff) !== 0 || (high & 0x7f000000) !== 0) throw malformed(name, `L1 entry ${l1Index} has reserved bits set`);
    const l2Offset = (high & 0x00ffffff) * TWO_32 + ((low & 0xfffffe00) >>> 0); // bits 9-55
    if (l2Offset === 0) continue; // unallocated: the whole range reads from the backing file
    if (l2Offset % clusterSize !== 0) throw malformed(name, `L2 table of guest offset ${firstGuest} at ${l2Offset} is not cluster aligned`);
    if (l2Offset + clusterSize > fileSize)
      throw malformed(name, `L2 table of guest offset ${firstGuest} at ${l2Offset} lies beyond the end of the file (${fileSize} bytes)`);
    const tableCluster = l2Offset / clusterSize;
    const mark = 1 << (tableCluster % 8);
    const byte = Math.floor(tableCluster / 8);
    if ((seenTables[byte]! & mark) !== 0) throw malformed(name, `L2 table at ${l2Offset} is used by two L1 entries`);
    seenTables[byte]! |= mark;

    const l2 = await source.read(l2Offset, clusterSize);
    const entriesHere = Math.min(l2Entries, guestClusters - l1Index * l2Entries);
    for (let l2Index = 0; l2Index < entriesHere; l2Index++) {
      const entryHigh = l2.readUInt32BE(l2Index * 8);
      const entryLow = l2.readUInt32BE(l2Index * 8 + 4);
      if (entryHigh === 0 && entryLow === 0) continue;
      const guestOffset = firstGuest + l2Index * clusterSize;
      const length = Math.min(clusterSize, virtualSize - guestOffset);
      if ((entryHigh & 0x40000000) !== 0) {
        const entry = (BigInt(entryHigh) << 32n) | BigInt(entryLow >>> 0);
        const offsetMask = (1n << BigInt(compressedOffsetBits)) - 1n;
        const hostOffset = entry & offsetMask;
        const extraSectors = Number((entry >> BigInt(compressedOffsetBits)) & ((1n << BigInt(clusterBits - 8)) - 1n));
        if (hostOffset >= BigInt(fileSize))
          throw malformed(name, `compressed cluster of guest offset ${guestOffset} at ${hostOffset} lies beyond the end of the file (${fileSize} bytes)`);
        const start = Number(hostOffset);
        // The stream's last sector may be cut short by the end of the file; QEMU reads that as zeroes.
        const streamLength = Math.min((extraSectors + 1) * 512 - (start % 512), fileSize - start);
        extents.push(EXTENT_COMPRESSED, guestOffset, length, start, streamLength);
        continue;
      }
      if ((entryLow & 0x1fe) !== 0 || (entryHigh & 0x3f000000) !== 0) throw malformed(name, `L2 entry of guest offset ${guestOffset} has reserved bits set`);
      const hostOffset = (entryHigh & 0x00ffffff) * TWO_32 + ((entryLow & 0xfffffe00) >>> 0);
      if (hostOffset % clusterSize !== 0) throw malformed(name, `cluster of guest offset ${guestOffset} at ${hostOffset} is not cluster aligned`);
      if ((entryLow & 1) !== 0) {
        if (header.version === 2) throw malformed(name, `L2 entry of guest offset ${guestOffset} has the zero flag, which version 2 images do not have`);
        // Reads as zeroes, whatever it may have preallocated.
        extents.push(EXTENT_ZERO, guestOffset, length);
        continue;
      }
      if (hostOffset === 0) continue; // unallocated (offset 0 never holds data without an external data file)
      if (hostOffset >= fileSize)
        throw malformed(name, `data cluster of guest offset ${guestOffset} at ${hostOffset} lies beyond the end of the file (${fileSize} bytes)`);
      extents.push(EXTENT_DATA, guestOffset, length, hostOffset);
    }
  }
  return { header, extents, fileSize };
}

/**
 * Inflates one compressed cluster (raw deflate or a zstd frame, as QEMU writes them).
 * A deflate stream may end without its final block marker; either may be followed by
 * the next cluster's bytes; it must produce exactly one cluster.
 */
export async function inflateCluster(
  compressed: Buffer,
  clusterSize: number,
  describe: () => string,
  compression: ClusterCompression = 'zlib',
): Promise<Buffer> {
  try {
    return await decompressCluster(compression, compressed, clusterSize);
  } catch (error) {
    const kind = compression === 'zlib' ? 'deflate stream' : 'zstd frame';
    throw new BackupSetError('CHAIN_BROKEN', `${describe()} is not a valid ${kind} of one cluster: ${error instanceof Error ? error.message : String(error)}`, {
      cause: error,
    });
  }
}
