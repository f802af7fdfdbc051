// The receive-slab pool shared by a client's connections: memory comes back for reuse
// only once nothing can see it, and never when a handshake may still hold views of it.
import test, { type ExecutionContext } from 'ava';
import { lendReceived, returnReceived, SlabPool, slabReader, type SlabReader } from '../../src/nbd/slabs.js';

/** Fills the reader's current slab completely; returns the memory it landed in. */
function fillSlab(reader: SlabReader): ArrayBufferLike {
  const room = reader.buffer();
  reader.callback(room.length, room);
  return room.buffer;
}

const freeMemory = (pool: SlabPool): ArrayBufferLike[] => pool.free.map((slab) => slab.memory.buffer);

/** A reader past its handshake, with one slab lent out and then given back to `pool`. */
function poolWithOneFreeSlab(t: ExecutionContext): { pool: SlabPool; free: ArrayBufferLike } {
  const pool = new SlabPool();
  let last: Buffer | undefined;
  const reader = slabReader(pool, (chunk) => (last = chunk));
  fillSlab(reader);
  reader.startRecycling();
  const free = fillSlab(reader);
  const piece = last!;
  lendReceived(piece);
  // Lent out, the slab is neither written again when the reader moves on nor pooled...
  t.not(fillSlab(reader), free);
  t.false(freeMemory(pool).includes(free));
  // ...until the piece is returned.
  returnReceived(piece);
  return { pool, free };
}

test('after the handshake a slab nothing holds is reused at once; the handshake slab never', (t) => {
  const pool = new SlabPool();
  const reader = slabReader(pool, () => {});
  const handshakeSlab = fillSlab(reader);
  reader.startRecycling();
  const dataSlab = fillSlab(reader);
  t.not(dataSlab, handshakeSlab);
  // Nothing held the data slab's pieces: the next read lands in it again.
  t.is(fillSlab(reader), dataSlab);
  t.is(fillSlab(reader), dataSlab);
});

test('a slab lent out goes back to the shared pool when its piece is returned', (t) => {
  const { pool, free } = poolWithOneFreeSlab(t);
  t.deepEqual(freeMemory(pool), [free]);
});

test('a connection in its handshake that draws a slab from the shared pool keeps it out of reuse', (t) => {
  const { pool, free } = poolWithOneFreeSlab(t);
  const joining = slabReader(pool, () => {});
  fillSlab(joining);
  // The joining connection is still negotiating: its next slab is the free one.
  t.is(fillSlab(joining), free);
  t.deepEqual(freeMemory(pool), []);
  // Moving on does not hand what the handshake may still see back for reuse.
  t.not(fillSlab(joining), free);
  t.false(freeMemory(pool).includes(free));
});
