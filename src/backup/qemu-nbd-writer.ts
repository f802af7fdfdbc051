// A qcow2 file opened for writing through qemu-nbd, so backups are written by
// QEMU's own qcow2 driver (correct metadata, zero clusters over a backing file)
// while the data flows through our NBD client.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { NbdClient } from '../nbd/index.js';

export interface QcowWriter {
  client: NbdClient;
  /** Flushes, disconnects and waits for qemu-nbd to exit (its writes are then on disk). */
  finish(): Promise<void>;
  /** Stops everything without flushing (the file is discarded by the caller). */
  kill(): Promise<void>;
}

const START_TIMEOUT_MS = 10_000;

export async function openQcowWriter(path: string): Promise<QcowWriter> {
  const dir = await mkdtemp(join(tmpdir(), 'lvb-writer-'));
  const socket = join(dir, 'nbd.sock');
  // A direct child (no --fork) so its exit is observed, not polled. Without
  // --persistent it ends when our client disconnects.
  const child = spawn(
    'qemu-nbd',
    ['--format=qcow2', `--socket=${socket}`, '--cache=writeback', '--discard=unmap', '--shared=1', path],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.once('error', () => resolve(-1));
  });
  const cleanup = () => rm(dir, { recursive: true, force: true });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
    await cleanup();
  };
  let client: NbdClient;
  try {
    await waitForSocket(socket, child, () => stderr);
    client = await NbdClient.connect({ path: socket, exportName: '', metaContexts: [] });
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    client,
    async finish() {
      await client.flush();
      await client.close();
      const code = await exited;
      await cleanup();
      if (code !== 0) throw new Error(`qemu-nbd writing ${path} exited with ${code}: ${stderr.trim()}`);
    },
    async kill() {
      await client.close().catch(() => undefined);
      await stop();
    },
  };
}

async function waitForSocket(socket: string, child: ChildProcess, stderr: () => string): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`qemu-nbd exited with ${child.exitCode}: ${stderr().trim()}`);
    try {
      if ((await stat(socket)).isSocket()) return;
    } catch {
      // not there yet
    }
    if (Date.now() > deadline) throw new Error(`qemu-nbd did not open ${socket} within ${START_TIMEOUT_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
