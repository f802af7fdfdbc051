import { ConnectFlags } from './constants.js';
import { Domain } from './domain.js';
import { EventHub, type ConnectionEventName, type ConnectionEvents } from './events.js';
import { nativeAddon, type NativeConnection } from './native.js';
import { parseDomainCapabilities } from './xml/index.js';

export interface ConnectOptions {
  /** Open read-only (`VIR_CONNECT_RO`): allowed to unprivileged users, refuses changes. */
  readOnly?: boolean;
  /** Raw `ConnectFlags`, or-ed with what the other options imply. */
  flags?: number;
  /**
   * Keepalive probes for remote drivers: a probe every `interval` seconds, the
   * connection is closed after `count` unanswered ones. `interval <= 0` turns
   * keepalive off. libvirt's default is 5 s x 5.
   */
  keepAlive?: { interval: number; count: number };
}

/** Whether a connection can do checkpoints and backups, and why not. */
export interface BackupSupport {
  checkpoints: boolean;
  backups: boolean;
  /** Why one of them is unavailable. */
  reason?: string;
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
  const native = await nativeAddon().open(uri ?? null, flags);
  const connection = new Connection(native);
  if (options.keepAlive) {
    try {
      await connection.setKeepAlive(options.keepAlive.interval, options.keepAlive.count);
    } catch (error) {
      await connection.close();
      throw error;
    }
  }
  return connection;
}

/**
 * A connection to a libvirt driver. Every method that may reach the daemon runs
 * off the JS thread and returns a Promise; concurrent calls run concurrently.
 * After `close()`, every call on it and on its domains rejects with
 * `VIR_ERR_INVALID_CONN`.
 */
export class Connection {
  readonly #native: NativeConnection;
  readonly #events: EventHub;
  #libVersion: Promise<number> | undefined;

  /** @internal Use `connect()`. */
  constructor(native: NativeConnection) {
    this.#native = native;
    this.#events = new EventHub(native, (domain) => new Domain(this, domain));
  }

  /**
   * Listens for an event. The libvirt registration is made when the first
   * listener of a kind is added (await `eventsReady()` to know it is in place) and
   * removed with the last one. While a listener is registered, the process stays
   * alive, like with a socket; with none, nothing here keeps it alive.
   */
  on<E extends ConnectionEventName>(event: E, listener: ConnectionEvents[E]): this {
    this.#events.add(event, listener, false);
    return this;
  }

  once<E extends ConnectionEventName>(event: E, listener: ConnectionEvents[E]): this {
    this.#events.add(event, listener, true);
    return this;
  }

  off<E extends ConnectionEventName>(event: E, listener: ConnectionEvents[E]): this {
    this.#events.remove(event, listener);
    return this;
  }

  listenerCount(event: ConnectionEventName): number {
    return this.#events.listenerCount(event);
  }

  /** Resolves once libvirt has every event registration asked for so far; rejects if one failed. */
  async eventsReady(): Promise<void> {
    return this.#events.ready();
  }

  /** Keepalive for remote drivers (see `ConnectOptions.keepAlive`); in-process drivers reject with `VIR_ERR_NO_SUPPORT`. */
  async setKeepAlive(interval: number, count: number): Promise<boolean> {
    return this.#native.setKeepAlive(interval, count);
  }

  /** libvirt's version on the daemon side, fetched once per connection. */
  libVersion(): Promise<number> {
    this.#libVersion ??= this.#native.getLibVersion();
    return this.#libVersion;
  }

  /**
   * Whether this connection can take checkpoints and run backups, from the
   * domain capabilities (`<backup supported='yes'/>`) and the driver, so callers
   * can fail early with a clear message.
   */
  async getBackupSupport(query: DomainCapabilitiesQuery = {}): Promise<BackupSupport> {
    const uri = await this.getURI();
    if (uri.startsWith('test:')) {
      return { checkpoints: true, backups: false, reason: "libvirt's test driver implements checkpoints but not backups" };
    }
    const version = await this.libVersion();
    if (version < 6_000_000) {
      return { checkpoints: version >= 5_006_000, backups: false, reason: `libvirt ${version} is older than 6.0.0` };
    }
    let capabilities: string;
    try {
      capabilities = await this.getDomainCapabilities(query);
    } catch (error) {
      return { checkpoints: false, backups: false, reason: `domain capabilities unavailable: ${(error as Error).message}` };
    }
    const { backupSupported } = parseDomainCapabilities(capabilities);
    if (backupSupported === true) return { checkpoints: true, backups: true };
    if (backupSupported === false) {
      return { checkpoints: false, backups: false, reason: "the hypervisor reports <backup supported='no'/> in its domain capabilities" };
    }
    return { checkpoints: false, backups: false, reason: 'the domain capabilities do not mention backup support' };
  }

  /** Throws a clear error unless checkpoints and backups are both available. */
  async assertBackupSupport(query: DomainCapabilitiesQuery = {}): Promise<void> {
    const support = await this.getBackupSupport(query);
    if (!support.backups || !support.checkpoints) {
      throw new Error(`incremental backups are not available on ${await this.getURI()}: ${support.reason ?? 'unsupported'}`);
    }
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
    if (this.#native.isClosed()) return;
    // Drop our registrations first so their thread-safe functions are released
    // and nothing keeps the process alive after close().
    this.#events.removeAll();
    await this.#events.ready().catch(() => undefined);
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
