import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { ExecutionContext } from 'ava';

const execFileAsync = promisify(execFile);

export async function tempDir(t: ExecutionContext, prefix = 'nbd-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export async function run(command: string, args: string[]): Promise<string> {
  const { stdout } = await execFileAsync(command, args, { maxBuffer: 64 * 1024 * 1024 });
  return stdout;
}

/** Exit status instead of an exception, for tools like `qemu-img compare`. */
export async function status(command: string, args: string[]): Promise<{ code: number; output: string }> {
  try {
    const { stdout, stderr } = await execFileAsync(command, args);
    return { code: 0, output: stdout + stderr };
  } catch (error) {
    const failed = error as { code?: number; stdout?: string; stderr?: string };
    return { code: failed.code ?? -1, output: `${failed.stdout ?? ''}${failed.stderr ?? ''}` };
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

function canConnect(target: { path: string } | { host: string; port: number }): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(target as never);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * Starts qemu-nbd in the foreground and waits until it accepts connections; it is
 * killed when the test ends. Returns a function that stops it earlier.
 */
export async function startQemuNbd(
  t: ExecutionContext,
  target: { path: string } | { host: string; port: number },
  args: string[],
): Promise<() => Promise<void>> {
  const listen = 'path' in target ? ['-k', target.path] : ['-b', target.host, '-p', String(target.port)];
  const child: ChildProcess = spawn('qemu-nbd', ['--persistent', '--shared=16', ...listen, ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let running = true;
  void exited.then(() => (running = false));
  const stop = async (): Promise<void> => {
    if (running) child.kill('SIGTERM');
    await exited;
  };
  t.teardown(stop);
  for (let i = 0; i < 200; i++) {
    if (!running) throw new Error(`qemu-nbd exited: ${stderr}`);
    if (await canConnect(target)) return stop;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`qemu-nbd did not start listening: ${stderr}`);
}

export function unixUri(socket: string, exportName = ''): string {
  return `nbd+unix:///${exportName}?socket=${socket}`;
}

export interface MapEntry {
  offset: number;
  length: number;
  flags: number;
}

/** `nbdinfo --map` for one context, with adjacent equal runs joined like our client does. */
export async function nbdinfoMap(uri: string, context: string): Promise<MapEntry[]> {
  const raw = JSON.parse(await run('nbdinfo', ['--json', `--map=${context}`, uri])) as Array<{
    offset: number;
    length: number;
    type: number;
  }>;
  const merged: MapEntry[] = [];
  for (const entry of raw) {
    const last = merged.at(-1);
    if (last && last.flags === entry.type && last.offset + last.length === entry.offset) last.length += entry.length;
    else merged.push({ offset: entry.offset, length: entry.length, flags: entry.type });
  }
  return merged;
}
