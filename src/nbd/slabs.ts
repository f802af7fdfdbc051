/**
 * Receive memory: slabs the kernel reads into, handed on piece by piece as views.
 *
 * Fresh memory costs page faults and garbage collections on every megabyte read, so a
 * slab is reused once nothing can see it any more: the reader has moved on to another
 * slab, every piece lent out was given back, and no piece went to a holder allowed to
 * keep it. A slab that fails any of these is simply dropped for the GC, as before.
 * Pieces are tracked through the ArrayBuffer they view, so plain Buffers flow everywhere.
 *
 * All connections of a client draw on one pool, and slabs are small: the memory a read
 * touches is then close to what is really in flight. Per-connection pools of 1 MiB slabs
 * touched about twice that (13 MiB for 4 MiB in flight over four connections), because
 * each connection kept its own partly filled and partly returned slabs. On a virtual
 * machine a first touch can cost 1-10 µs per page, which a short read notices.
 */

/** Reads land in slabs this large; a read never gets less than `MIN_READ_ROOM`. */
const SLAB_SIZE = 256 * 1024;
const MIN_READ_ROOM = 64 * 1024;
/**
 * Free memory a pool keeps for reuse. A consumer that keeps writes in flight holds tens
 * of megabytes at once; keeping that much idle only retains memory the peak already used.
 */
const POOL_LIMIT_BYTES = 64 * 1024 * 1024;

/** Free slabs shared by the readers of one client. */
export class SlabPool {
  readonly free: Slab[] = [];
  readonly limit = POOL_LIMIT_BYTES / SLAB_SIZE;
}

interface Slab {
  readonly memory: Buffer;
  readonly pool: SlabPool;
  /** Pieces lent out and not yet given back. */
  lent: number;
  /** Some piece went to a holder that may keep it forever. */
  kept: boolean;
  /** The reader still writes into it. */
  active: boolean;
}

/**
 * Names a slab's ArrayBuffer's record. A property rather than a WeakMap: WeakMap keys
 * survive minor collections, which kept dropped slabs in memory far longer.
 */
const SLAB = Symbol('nbd receive slab');
type Tagged = ArrayBufferLike & { [SLAB]?: Slab };

function slabOf(bytes: Uint8Array): Slab | undefined {
  return (bytes.buffer as Tagged)[SLAB];
}

function recycle(slab: Slab): void {
  const pool = slab.pool;
  if (slab.active || slab.kept || slab.lent > 0 || pool.free.length >= pool.limit) return;
  pool.free.push(slab);
}

/** `bytes` may be held forever: its slab is never reused. */
export function keepReceived(bytes: Uint8Array): void {
  const slab = slabOf(bytes);
  if (slab) slab.kept = true;
}

/** `bytes` is held until `returnReceived(bytes)`. */
export function lendReceived(bytes: Uint8Array): void {
  const slab = slabOf(bytes);
  if (slab) slab.lent++;
}

/** Gives back what `lendReceived` lent; the memory may be overwritten from now on. */
export function returnReceived(bytes: Uint8Array): void {
  const slab = slabOf(bytes);
  if (!slab) return;
  slab.lent--;
  recycle(slab);
}

/**
 * Where the connection wants the next socket read: straight into memory it names (a
 * read's destination, so the bytes are not copied again), into a slab but no more than
 * this many bytes (so a payload that follows can go straight to its destination), or
 * anywhere (undefined).
 */
export type ReadPlacement = Uint8Array | number | undefined;

export interface SlabReader {
  /** Where the next read lands (net.Socket's `onread.buffer`). */
  buffer(): Uint8Array;
  /** net.Socket's `onread.callback`. */
  callback(nread: number, buf: Uint8Array): boolean;
  /**
   * From now on slabs may be reused. Until then (the handshake, whose parser holds
   * on to what it reads) every slab counts as kept.
   */
  startRecycling(): void;
  /** Asked before every read where it should land. */
  placeReadsWith(place: () => ReadPlacement): void;
}

export function slabReader(pool: SlabPool, emit: (chunk: Buffer) => void): SlabReader {
  let recycling = false;
  const fresh = (): Slab => {
    const slab: Slab = { memory: Buffer.allocUnsafeSlow(SLAB_SIZE), pool, lent: 0, kept: !recycling, active: true };
    (slab.memory.buffer as Tagged)[SLAB] = slab;
    return slab;
  };
  let slab = fresh();
  let used = 0;
  let place: (() => ReadPlacement) | undefined;
  /** The last buffer handed out was the connection's, not a slab's. */
  let direct = false;
  return {
    buffer() {
      const placement = place?.();
      direct = placement instanceof Uint8Array;
      if (placement instanceof Uint8Array) return placement;
      if (SLAB_SIZE - used < MIN_READ_ROOM) {
        slab.active = false;
        recycle(slab);
        slab = pool.free.pop() ?? fresh();
        slab.active = true;
        // The pool is shared: a connection still in its handshake may draw a slab
        // another one gave back, and what the handshake reads must never be reused.
        if (!recycling) slab.kept = true;
        used = 0;
      }
      return slab.memory.subarray(used, placement === undefined ? SLAB_SIZE : Math.min(SLAB_SIZE, used + placement));
    },
    callback(nread, buf) {
      if (!direct) used += nread;
      emit(Buffer.from(buf.buffer, buf.byteOffset, nread));
      return true;
    },
    startRecycling() {
      recycling = true;
    },
    placeReadsWith(placer) {
      place = placer;
    },
  };
}
