import { lendReceived, returnReceived } from './slabs.js';

/**
 * Bytes received from a socket, kept as the chunks they arrived in so payloads can be
 * handed on as views instead of being concatenated. A chunk is borrowed from its slab
 * while queued, so the slab is not reused under bytes not parsed yet; what `read` and
 * `view` return is valid until the caller returns to the event loop, unless it keeps
 * or borrows it itself (see slabs.ts).
 */
export class ByteQueue {
  private chunks: Buffer[] = [];
  private headOffset = 0;
  length = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    lendReceived(chunk);
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** Reads `size` bytes; copies only when they straddle chunks (headers are small). */
  read(size: number): Buffer {
    if (size > this.length) throw new RangeError(`need ${size} bytes, have ${this.length}`);
    const first = this.chunks[0];
    if (first !== undefined && first.length - this.headOffset >= size) {
      return this.take(first, size);
    }
    const out = Buffer.allocUnsafe(size);
    let filled = 0;
    while (filled < size) {
      const view = this.view(size - filled);
      view.copy(out, filled);
      filled += view.length;
    }
    return out;
  }

  /** The next four bytes as a big-endian number, left in the queue. */
  peekUInt32BE(): number {
    const first = this.chunks[0];
    if (first !== undefined && first.length - this.headOffset >= 4) return first.readUInt32BE(this.headOffset);
    let value = 0;
    let seen = 0;
    for (let i = 0; seen < 4; i++) {
      const chunk = this.chunks[i];
      if (chunk === undefined) throw new RangeError('need 4 bytes');
      for (let at = i === 0 ? this.headOffset : 0; at < chunk.length && seen < 4; at++, seen++) {
        value = value * 256 + chunk[at]!;
      }
    }
    return value;
  }

  /** Up to `max` bytes from the first chunk, without copying. */
  view(max: number): Buffer {
    const first = this.chunks[0];
    if (first === undefined) return Buffer.alloc(0);
    return this.take(first, Math.min(max, first.length - this.headOffset));
  }

  /** Drops `size` bytes. */
  skip(size: number): void {
    let left = Math.min(size, this.length);
    while (left > 0) left -= this.view(left).length;
  }

  /** Removes and returns every chunk left; they stay borrowed, now by the caller. */
  drain(): Buffer[] {
    const rest = this.chunks;
    if (rest[0] !== undefined && this.headOffset > 0) rest[0] = rest[0].subarray(this.headOffset);
    this.chunks = [];
    this.headOffset = 0;
    this.length = 0;
    return rest;
  }

  private take(first: Buffer, size: number): Buffer {
    const out = first.subarray(this.headOffset, this.headOffset + size);
    this.headOffset += size;
    this.length -= size;
    if (this.headOffset === first.length) {
      this.chunks.shift();
      this.headOffset = 0;
      returnReceived(first);
    }
    return out;
  }
}
