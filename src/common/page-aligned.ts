// Memory whose first byte starts a page. The kernel copies file data into a buffer
// (read, pread) several times slower when the destination is not aligned to a cache
// line, and Node's Buffer allocations start 16 bytes into their memory; a
// WebAssembly memory is mapped on its own and starts on a page.
const WASM_PAGE_BYTES = 64 * 1024;

// Node has WebAssembly whatever the TypeScript lib settings say; this is the part used here.
declare const WebAssembly: { Memory: new (descriptor: { initial: number; maximum: number }) => { readonly buffer: ArrayBuffer } };

/** Page-aligned memory of at least `bytes`, for buffers carved out of it. */
export type AlignedMemorySource = (bytes: number) => ArrayBuffer;

/** Memory of exactly `bytes` (a multiple of 64 KiB), mapped on its own by V8. */
export const wasmMemory: AlignedMemorySource = (bytes) => {
  const pages = bytes / WASM_PAGE_BYTES;
  // A fixed maximum: the memory can never grow, so its buffer is never detached.
  return new WebAssembly.Memory({ initial: pages, maximum: pages }).buffer;
};

/**
 * `count` buffers of `bytes` each, every one starting on a page of its own (they lie
 * 64 KiB apart in one memory, from `memory`: WebAssembly memory unless given).
 */
export function pageAlignedBuffers(count: number, bytes: number, memory: AlignedMemorySource = wasmMemory): Buffer[] {
  if (!Number.isSafeInteger(count) || count < 0) throw new RangeError(`count must be a non-negative integer, got ${count}`);
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new RangeError(`bytes must be a positive integer, got ${bytes}`);
  const stride = Math.ceil(bytes / WASM_PAGE_BYTES) * WASM_PAGE_BYTES;
  if (count === 0) return [];
  const buffer = memory(stride * count);
  if (buffer.byteLength < stride * count) throw new RangeError(`the memory source gave ${buffer.byteLength} bytes of the ${stride * count} asked for`);
  return Array.from({ length: count }, (_, index) => Buffer.from(buffer, index * stride, bytes));
}
