// Whether a server is ready: a socket file or a bound port exists a moment before anything listens on it.
import { createConnection } from 'node:net';

/** True when a connection to the unix socket or TCP address is accepted (it is closed at once). */
export function acceptsConnections(where: { path: string } | { host: string; port: number }): Promise<boolean> {
  return new Promise((resolveProbe) => {
    const probe = createConnection(where);
    probe.once('connect', () => {
      probe.destroy();
      resolveProbe(true);
    });
    probe.once('error', () => resolveProbe(false));
  });
}
