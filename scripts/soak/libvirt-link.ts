// The soak's own connection to libvirtd, for setting up domains and writing into
// them. libvirtd is killed on purpose during the faults suite, so the connection is
// opened again whenever the old one died.
import { connect, type Connection, type Domain, LibvirtError } from '../../src/index.js';

const CONNECTION_LOST = new Set(['VIR_ERR_INVALID_CONN', 'VIR_ERR_SYSTEM_ERROR', 'VIR_ERR_RPC', 'VIR_ERR_NO_CONNECT', 'VIR_ERR_INTERNAL_ERROR']);

export class LibvirtLink {
  #connection: Connection | null = null;

  constructor(readonly uri = 'qemu:///system') {}

  async connection(): Promise<Connection> {
    if (this.#connection !== null && !this.#connection.closed && (await this.#connection.isAlive().catch(() => false))) return this.#connection;
    await this.drop();
    try {
      this.#connection = await connect(this.uri);
    } catch (error) {
      throw new Error(`libvirtd is not reachable on ${this.uri}: ${(error as Error).message}. Run \`bash scripts/setup-host.sh\` as root.`, { cause: error });
    }
    return this.#connection;
  }

  /** Runs `action` on the domain; once more on a fresh connection if the daemon went away meanwhile. */
  async withDomain<T>(name: string, action: (domain: Domain) => Promise<T>): Promise<T> {
    try {
      return await action(await (await this.connection()).lookupDomainByName(name));
    } catch (error) {
      if (!(error instanceof LibvirtError && CONNECTION_LOST.has(error.codeName))) throw error;
      await this.drop();
      return action(await (await this.connection()).lookupDomainByName(name));
    }
  }

  /** Forgets the connection (after libvirtd was killed); the next call opens a new one. */
  async drop(): Promise<void> {
    const old = this.#connection;
    this.#connection = null;
    await old?.close().catch(() => undefined);
  }
}
