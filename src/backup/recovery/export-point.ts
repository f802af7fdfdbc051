import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { BackupSet } from '../set/backup-set.js';
import { assertChainIntact } from '../set/chain-check.js';
import { RecoveryError } from './recovery-errors.js';
import { pathExists } from '../../common/path-exists.js';
import { acceptsConnections } from '../../common/accepts-connections.js';

/** Which backup point and disk `exportPoint()` serves, and where it listens. */
export interface ExportPointOptions {
  /** The set directory; only read. */
  dir: string;
  at?: string;
  /** The disk's target (`vda`). */
  disk: string;
  /** Where to listen: a unix socket (default one in a new private directory), or TCP with TLS. */
  listen?: { socket: string } | { host: string; port: number; tlsDir: string };
  /** Ends the export (qemu-nbd is stopped, a socket it made removed). */
  signal?: AbortSignal;
}

/** A backup point being served read-only over NBD: which one, where to reach it, and a promise that settles when the export ends. */
export interface PointExport {
  backupId: string;
  disk: string;
  /** The export's name: the disk's target. */
  exportName: string;
  /** `nbd+unix:///vda?socket=...` or `nbds://HOST:PORT/vda`. */
  uri: string;
  /** The listening socket, for a unix export. */
  socket: string | null;
  virtualSize: number;
  /** Settles when the export ends: resolves after `signal` stopped it, rejects when qemu-nbd ended by itself. */
  done: Promise<void>;
}

/** The executable; overridable like qemu-img. */
function qemuNbdCommand(): string {
  return process.env['LIBVIRT_BACKUP_QEMU_NBD'] ?? 'qemu-nbd';
}

/**
 * Serves one disk of a backup point read-only over NBD with qemu-nbd, until `signal`
 * ends it: the point's top file is opened read-only with its backing chain, so the
 * export is exactly what `restore` of that point writes, and the set never changes.
 * Several clients may read at once. Resolves once qemu-nbd listens.
 */
export async function exportPoint(options: ExportPointOptions): Promise<PointExport> {
  const set = await BackupSet.open(options.dir);
  const point = options.at === undefined ? set.latest() : set.getBackup(options.at);
  if (point === null) throw new RecoveryError('INVALID_ARGUMENT', `${set.dir} holds no backups yet`);
  const chain = set.chainFor(options.disk, point.id);
  await assertChainIntact(set, chain, options.signal !== undefined ? { signal: options.signal } : {});
  const top = chain.at(-1)!;
  options.signal?.throwIfAborted();

  let privateDir: string | null = null;
  const listen = options.listen ?? { socket: join((privateDir = await mkdtemp(join(tmpdir(), 'libvirt-backup-export-'))), `${options.disk}.sock`) };
  const args = ['--read-only', '--persistent', '--shared=16', '--format=qcow2', `--export-name=${options.disk}`, '--cache=none', '--aio=threads'];
  let uri: string;
  let socket: string | null = null;
  if ('socket' in listen) {
    socket = resolve(listen.socket);
    if (await pathExists(socket)) throw new RecoveryError('OUTPUT_EXISTS', `${socket} already exists; remove it or choose another --socket`);
    args.push(`--socket=${socket}`);
    uri = `nbd+unix:///${options.disk}?socket=${socket}`;
  } else {
    args.push(
      `--bind=${listen.host}`,
      `--port=${listen.port}`,
      `--object=tls-creds-x509,id=tls0,endpoint=server,dir=${resolve(listen.tlsDir)}`,
      '--tls-creds=tls0',
    );
    const host = listen.host.includes(':') ? `[${listen.host}]` : listen.host;
    uri = `nbds://${host}:${listen.port}/${options.disk}`;
  }
  args.push(top.path);

  const child = spawn(qemuNbdCommand(), args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const cleanup = async (): Promise<void> => {
    if (socket !== null) await rm(socket, { force: true });
    if (privateDir !== null) await rm(privateDir, { recursive: true, force: true });
  };
  try {
    await waitUntilListening(child, socket, 'socket' in listen ? null : listen);
  } catch (error) {
    child.kill('SIGTERM');
    await cleanup();
    throw error;
  }
  const done = superviseExport(child, options.signal, cleanup);
  return { backupId: point.id, disk: options.disk, exportName: options.disk, uri, socket, virtualSize: top.disk.virtualSize, done };
}

/** qemu-nbd says nothing when it is ready: its socket or port taking connections does (the socket file exists a moment before). */
async function waitUntilListening(child: ChildProcess, socket: string | null, tcp: { host: string; port: number } | null): Promise<void> {
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-4000);
  });
  let exited: { code: number | null } | null = null;
  let spawnError: Error | null = null;
  child.once('exit', (code) => (exited = { code }));
  child.once('error', (error) => (spawnError = error));
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (spawnError !== null)
      throw new RecoveryError('EXPORT_FAILED', `cannot start ${qemuNbdCommand()}: ${(spawnError as Error).message}`, { cause: spawnError });
    if (exited !== null)
      throw new RecoveryError(
        'EXPORT_FAILED',
        `qemu-nbd exited (code ${(exited as { code: number | null }).code ?? 'none'}): ${stderr.trim() || 'no message'}`,
      );
    if (await acceptsConnections(socket !== null ? { path: socket } : tcp!)) return;
    if (Date.now() > deadline) throw new RecoveryError('EXPORT_FAILED', `qemu-nbd did not start listening within 15 s: ${stderr.trim() || 'no message'}`);
    await new Promise((resolveWait) => setTimeout(resolveWait, 20));
  }
}

function superviseExport(child: ChildProcess, signal: AbortSignal | undefined, cleanup: () => Promise<void>): Promise<void> {
  return new Promise<void>((resolveDone, rejectDone) => {
    let stopping = false;
    const stop = (): void => {
      stopping = true;
      child.kill('SIGTERM');
    };
    signal?.addEventListener('abort', stop, { once: true });
    if (signal?.aborted === true) stop();
    child.once('exit', (code, killedBy) => {
      signal?.removeEventListener('abort', stop);
      void cleanup().finally(() => {
        if (stopping) resolveDone();
        else rejectDone(new RecoveryError('EXPORT_FAILED', `qemu-nbd stopped serving by itself (${killedBy ?? `exit code ${code ?? 'none'}`})`));
      });
    });
  });
}
