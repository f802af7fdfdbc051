// sha256 of a file that is being written front to back, computed on a worker
// thread that reads behind the writer: the JS thread, busy with the NBD stream,
// neither hashes nor copies, and nothing is read twice from the disk (the bytes
// are still in the page cache).
import { Worker } from 'node:worker_threads';

// Plain CommonJS so the worker needs no loader; it only reads and hashes.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const fs = require('node:fs');
const { createHash } = require('node:crypto');
const fd = fs.openSync(workerData.path, 'r');
const hash = createHash('sha256');
const buffer = Buffer.allocUnsafe(4 * 1024 * 1024);
let position = 0;
parentPort.on('message', ({ upTo, last }) => {
  try {
    while (position < upTo) {
      const read = fs.readSync(fd, buffer, 0, Math.min(buffer.length, upTo - position), position);
      if (read <= 0) throw new Error('file ended at ' + position + ' before ' + upTo);
      hash.update(buffer.subarray(0, read));
      position += read;
    }
    if (last) {
      fs.closeSync(fd);
      parentPort.postMessage({ sha256: hash.digest('hex'), bytes: position });
    }
  } catch (error) {
    parentPort.postMessage({ error: String(error && error.message || error) });
  }
});
`;

export class TailHasher {
  readonly #worker: Worker;
  readonly #result: Promise<{ sha256: string; bytes: number }>;

  constructor(path: string) {
    this.#worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { path } });
    this.#result = new Promise((resolve, reject) => {
      this.#worker.once('message', (message: { sha256?: string; bytes?: number; error?: string }) => {
        if (message.error !== undefined) reject(new Error(`hashing ${path}: ${message.error}`));
        else resolve({ sha256: message.sha256!, bytes: message.bytes! });
      });
      this.#worker.once('error', reject);
      this.#worker.once('exit', (code) => reject(new Error(`hashing ${path}: worker exited with ${code}`)));
    });
    this.#result.catch(() => undefined);
  }

  /** The file's first `bytes` bytes are written and final. */
  advance(bytes: number): void {
    this.#worker.postMessage({ upTo: bytes, last: false });
  }

  /** The file is complete at `bytes` bytes: resolves with its sha256. */
  async finish(bytes: number): Promise<string> {
    this.#worker.postMessage({ upTo: bytes, last: true });
    try {
      const result = await this.#result;
      if (result.bytes !== bytes) throw new Error(`hashed ${result.bytes} bytes of ${bytes}`);
      return result.sha256;
    } finally {
      await this.#worker.terminate();
    }
  }

  async abort(): Promise<void> {
    await this.#worker.terminate();
  }
}
