// A qcow2 file opened for writing through qemu-nbd, so backups are written by
// QEMU's own qcow2 driver (correct metadata, zero clusters over a backing file)
// while the data flows through our NBD client.
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { NbdClient } from '../nbd/index.js';

export interface QcowWriter {
  client: NbdClient;
  /** Flushes, disconnects and waits for qemu-nbd to exit. */
  finish(): Promise<void>;
  /** Stops everything without flushing (the file is discarded by the caller). */
  kill(): Promise<void>;
}

function runToExit(command: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('error', reject);
    child.once('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`${command} ${args.join(' ')} failed (exit ${code}): ${stderr.trim()}`)),
    );
  });
}

function processGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch {
    return true;
  }
}

async function waitGone(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!processGone(pid)) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return true;
}

export async function openQcowWriter(path: string): Promise<QcowWriter> {
  const dir = await mkdtemp(join(tmpdir(), 'lvb-writer-'));
  const socket = join(dir, 'nbd.sock');
  const pidFile = join(dir, 'pid');
  // --fork returns once the socket listens; without --persistent the server ends
  // when our client disconnects, which is also when its writes are on disk.
  await runToExit('qemu-nbd', [
    '--fork',
    `--pid-file=${pidFile}`,
    '--format=qcow2',
    `--socket=${socket}`,
    '--cache=writeback',
    '--discard=unmap',
    '--shared=1',
    path,
  ]).catch(async (error: unknown) => {
    await rm(dir, { recursive: true, force: true });
    throw error;
  });
  const pid = Number((await readFile(pidFile, 'utf8')).trim());
  let client: NbdClient;
  try {
    client = await NbdClient.connect({ path: socket, exportName: '', metaContexts: [] });
  } catch (error) {
    if (!processGone(pid)) process.kill(pid, 'SIGTERM');
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
  const cleanup = () => rm(dir, { recursive: true, force: true });
  return {
    client,
    async finish() {
      await client.flush();
      await client.close();
      if (!(await waitGone(pid, 30_000))) throw new Error(`qemu-nbd (pid ${pid}) did not exit after writing ${path}`);
      await cleanup();
    },
    async kill() {
      await client.close().catch(() => undefined);
      if (!processGone(pid)) process.kill(pid, 'SIGKILL');
      await waitGone(pid, 5_000);
      await cleanup();
    },
  };
}
