import { ConnectFlags } from './constants.js';
import { Domain } from './domain.js';
import { addon, type NativeConnection } from './native.js';

export interface ConnectOptions {
  /** Open read-only (`VIR_CONNECT_RO`): allowed to unprivileged users, refuses changes. */
  readOnly?: boolean;
  /** Raw `ConnectFlags`, or-ed with what the other options imply. */
  flags?: number;
}

export interface DomainCapabilitiesQuery {
  emulatorbin?: string;
  arch?: string;
  machine?: string;
  /** `'kvm'` or `'qemu'` for the QEMU driver. */
  virttype?: string;
  flags?: number;
}

/**
 * Opens a connection to libvirt. `uri` defaults to libvirt's own default
 * (`LIBVIRT_DEFAULT_URI`, then its config and probing).
 */
export async function connect(uri?: string, options: ConnectOptions = {}): Promise<Connection> {
  if (uri !== undefined && typeof uri !== 'string') {
    throw new TypeError('The "uri" argument must be a string');
  }
  const flags = (options.flags ?? 0) | (options.readOnly === true ? ConnectFlags.RO : 0);
  const native = await addon.open(uri ?? null, flags);
  return new Connection(native);
}

/**
 * A connection to a libvirt driver. Every method that may reach the daemon runs
 * off the JS thread and returns a Promise; concurrent calls run concurrently.
 * After `close()`, every call on it and on its domains rejects with
 * `VIR_ERR_INVALID_CONN`.
 */
export class Connection {
  readonly #native: NativeConnection;

  /** @internal Use `connect()`. */
  constructor(native: NativeConnection) {
    this.#native = native;
  }

  /** True once `close()` was called. */
  get closed(): boolean {
    return this.#native.isClosed();
  }

  /**
   * Closes the connection. Domain handles obtained from it are released at once;
   * calls already in flight finish first, then the daemon connection ends.
   * Closing twice is harmless.
   */
  async close(): Promise<void> {
    return this.#native.close();
  }

  /** libvirt's version on the daemon side, encoded as major * 1e6 + minor * 1e3 + release. */
  async getLibVersion(): Promise<number> {
    return this.#native.getLibVersion();
  }

  /** The hypervisor's version (e.g. QEMU's), encoded like `getLibVersion()`. */
  async getVersion(): Promise<number> {
    return this.#native.getVersion();
  }

  async getHostname(): Promise<string> {
    return this.#native.getHostname();
  }

  /** The canonical URI of this connection (after libvirt's probing). */
  async getURI(): Promise<string> {
    return this.#native.getURI();
  }

  /** The host capabilities XML. */
  async getCapabilities(): Promise<string> {
    return this.#native.getCapabilities();
  }

  /** The domain capabilities XML (`<backup supported=...>` lives here). */
  async getDomainCapabilities(query: DomainCapabilitiesQuery = {}): Promise<string> {
    return this.#native.getDomainCapabilities(
      query.emulatorbin ?? null,
      query.arch ?? null,
      query.machine ?? null,
      query.virttype ?? null,
      query.flags ?? 0,
    );
  }

  /** Whether the connection to the daemon is still usable (false once closed). */
  async isAlive(): Promise<boolean> {
    return this.#native.isAlive();
  }

  /** All domains, filtered by `ListDomainsFlags`. */
  async listAllDomains(flags = 0): Promise<Domain[]> {
    const natives = await this.#native.listAllDomains(flags);
    return natives.map((native) => new Domain(this, native));
  }

  /** Rejects with `VIR_ERR_NO_DOMAIN` when there is none. */
  async lookupDomainByName(name: string): Promise<Domain> {
    return new Domain(this, await this.#native.lookupDomainByName(name));
  }

  /** Rejects with `VIR_ERR_NO_DOMAIN` when there is none. */
  async lookupDomainByUUID(uuid: string): Promise<Domain> {
    return new Domain(this, await this.#native.lookupDomainByUUID(uuid));
  }

  /** Defines (or redefines) a persistent domain; it is not started. */
  async defineDomain(xml: string, flags = 0): Promise<Domain> {
    return new Domain(this, await this.#native.defineDomain(xml, flags));
  }

  /** Creates and starts a transient domain: it disappears when it stops. */
  async createDomain(xml: string, flags = 0): Promise<Domain> {
    return new Domain(this, await this.#native.createDomain(xml, flags));
  }
}
