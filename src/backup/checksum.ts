import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { abortedError, throwIfAborted } from './errors.js';

export interface ChecksumOptions {
  signal?: AbortSignal;
  /** Called as bytes are hashed, with the running total. */
  onProgress?: (bytesRead: number) => void;
}

/** Read buffer size: large enough for throughput on big images, small enough to stay bounded. */
const CHUNK_BYTES = 1 << 20;

/** sha256 of a file's bytes as lowercase hex, reading it in fixed-size chunks. */
export async function sha256File(path: string, options: ChecksumOptions = {}): Promise<string> {
  throwIfAborted(options.signal);
  const hash = createHash('sha256');
  const stream = createReadStream(path, { highWaterMark: CHUNK_BYTES });
  const onAbort = (): void => {
    stream.destroy(abortedError(options.signal!));
  };
  options.signal?.addEventListener('abort', onAbort, { once: true });
  let bytesRead = 0;
  try {
    for await (const chunk of stream) {
      const buffer = chunk as Buffer;
      hash.update(buffer);
      bytesRead += buffer.length;
      options.onProgress?.(bytesRead);
    }
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
    stream.destroy();
  }
  throwIfAborted(options.signal);
  return hash.digest('hex');
}
