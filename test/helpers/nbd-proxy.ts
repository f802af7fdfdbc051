// A proxy between libvirt's NBD export and the backup engine's client, on a unix socket
// the engine connects to instead of libvirt's (LIBVIRT_BACKUP_TEST_NBD_PROXY_SOCKET).
// It forwards bytes untouched and cuts every connection once the server has sent a
// given number of bytes, or when told to: a network or a server that drops the transfer
// half-way.
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface CuttingProxy {
  /** Where the engine should connect. */
  socket: string;
  /** Bytes the server had sent through the proxy when it cut (0 while it has not). */
  readonly cutAfter: number;
  readonly connections: number;
  /** Cuts every connection now, and refuses new ones; false if no connection was open. */
  cut(): boolean;
  close(): Promise<void>;
}

export interface CuttingProxyOptions {
  /**
   * Milliseconds the server's first bytes on connection `index` (0 for the first) are
   * held before the client gets them: a handshake slow to finish, which the server
   * sees as a client still negotiating.
   */
  holdGreetingMs?: (index: number) => number;
}

/**
 * `upstream()` says where the real export listens; it is asked on each connection, once
 * the job exists (the engine connects only after libvirt started it).
 */
export async function cuttingProxy(upstream: () => Promise<string>, cutAfterBytes = Infinity, options: CuttingProxyOptions = {}): Promise<CuttingProxy> {
  const dir = await mkdtemp(join(tmpdir(), 'lvb-nbd-proxy-'));
  const socket = join(dir, 'proxy.sock');
  const open = new Set<Socket>();
  let fromServer = 0;
  let cutAfter = 0;
  let cutDone = false;
  let connections = 0;
  const cut = () => {
    const wasOpen = open.size > 0;
    cutDone = true;
    cutAfter = fromServer;
    for (const end of open) end.destroy();
    return wasOpen;
  };
  const server: Server = createServer((client) => {
    const index = connections;
    connections += 1;
    open.add(client);
    client.on('close', () => open.delete(client));
    client.on('error', () => undefined);
    if (cutDone) return void client.destroy();
    client.pause();
    upstream().then(
      (path) => {
        // A cut (or the client leaving) while the export's path was asked for: no
        // connection to the server may follow it. One opened now would sit in the
        // handshake unanswered, and QEMU 7.2 as Debian ships it freezes, guest and all,
        // when the job ends while a client is still negotiating (README, "Known
        // problems").
        if (cutDone || client.destroyed) return void client.destroy();
        const far = createConnection({ path });
        const holdMs = options.holdGreetingMs?.(index) ?? 0;
        if (holdMs > 0) {
          // Unread, the greeting stays in the socket: the server has sent it and waits.
          far.pause();
          setTimeout(() => far.resume(), holdMs).unref();
        }
        open.add(far);
        far.on('close', () => {
          open.delete(far);
          client.destroy();
        });
        far.on('error', () => client.destroy());
        client.on('close', () => far.destroy());
        far.on('data', (chunk: Buffer) => {
          fromServer += chunk.length;
          if (cutDone) return;
          client.write(chunk);
          if (fromServer >= cutAfterBytes) cut();
        });
        client.on('data', (chunk: Buffer) => far.write(chunk));
        client.resume();
      },
      () => client.destroy(),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socket, () => resolve());
  });
  return {
    socket,
    get cutAfter() {
      return cutAfter;
    },
    get connections() {
      return connections;
    },
    cut,
    async close() {
      for (const end of open) end.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}
