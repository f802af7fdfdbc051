// Memory whose first byte starts a page. The kernel copies file data into a buffer
// (read, pread) several times slower when the destination is not aligned to a cache
// line, and Node's Buffer allocations start 16 bytes into their memory; a
// WebAssembly memory is mapped on its own and starts on a page.
const WASM_PAGE_BYTES = 64 * 1024;

// Node has WebAssembly whatever the TypeScript lib settings say; this is the part used here.
declare const WebAssembly: { Memory: new (descriptor: { initial: number; maximum: number }) => { readonly buffer: ArrayBuffer } };

/** `count` buffers of `bytes` each, every one starting on a page of its own (they lie 64 KiB-aligned in one memory). */
export function pageAlignedBuffers(count: number, bytes: number): Buffer[] {
  if (!Number.isSafeInteger(count) || count < 0) throw new RangeError(`count must be a non-negative integer, got ${count}`);
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new RangeError(`bytes must be a positive integer, got ${bytes}`);
  const stride = Math.ceil(bytes / WASM_PAGE_BYTES) * WASM_PAGE_BYTES;
  const pages = (stride * count) / WASM_PAGE_BYTES;
  if (pages === 0) return [];
  // A fixed maximum: the memory can never grow, so its buffer is never detached.
  const memory = new WebAssembly.Memory({ initial: pages, maximum: pages });
  return Array.from({ length: count }, (_, index) => Buffer.from(memory.buffer, index * stride, bytes));
}
