import { EventEmitter } from 'node:events';

import { ConnectFlags } from './constants.js';
import { Domain } from './domain.js';
import { EventRegistrations, isEventKind, type ConnectionEventMap, type EventKind } from './events.js';
import { type NativeConnection } from './native.js';
import { waitForEvent, type WaitForOptions } from './wait-for-event.js';
import { type ConnectAuth } from './connect-auth.js';
import { openNative } from './open-native.js';
import { StoragePool } from './storage-pool.js';
import { Stream } from './stream.js';
import { buildStoragePoolXml, parseDomainCapabilities, type DirStoragePoolSpec } from '../xml/index.js';

/** Options of `connect()`. */
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
  /**
   * Credentials for servers that ask for them (SASL on `qemu+tcp`, `qemu+tls` with
   * `auth_tls = "sasl"`, passphrases and host keys on `qemu+libssh`): a username and
   * password, or a callback that answers libvirt's requests, from the caller's own secret
   * store for instance. Without it, libvirt's `auth.conf` is still read and anything
   * else it asks for is refused: nothing ever prompts on the terminal (`+ssh` URIs get
   * `no_tty=1` for the same reason). Secrets never appear in errors.
   */
  auth?: ConnectAuth;
  /**
   * Milliseconds the whole attempt may take (connecting, the TLS or SSH handshake,
   * authentication, waiting for `auth`): after that it rejects with a
   * `LibvirtConnectError` whose `reason` is `'timeout'`. Default 30000; 0: no limit.
   */
  timeoutMs?: number;
}

/** Whether a connection can do checkpoints and backups, and why not. */
export interface BackupSupport {
  checkpoints: boolean;
  backups: boolean;
  /** Why one of them is unavailable. */
  reason?: string;
}

/** Which emulator, architecture, machine and virtualization type `getDomainCapabilities()` asks about; libvirt's defaults for what is left out. */
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
 * (`LIBVIRT_DEFAULT_URI`, then its config and probing). A failure to connect rejects
 * with a `LibvirtConnectError`: libvirt's code and message, and a `reason` that says
 * whether the credentials, the server's identity, this side's TLS files, the network
 * or the timeout was at fault.
 */
export async function connect(uri?: string, options: ConnectOptions = {}): Promise<Connection> {
  if (uri !== undefined && typeof uri !== 'string') {
    throw new TypeError('The "uri" argument must be a string');
  }
  const flags = (options.flags ?? 0) | (options.readOnly === true ? ConnectFlags.RO : 0);
  const native = await openNative(uri, flags, options.auth, options.timeoutMs);
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

/** Event names an EventEmitter itself uses, or that `events.on()` listens to. */
const EMITTER_EVENTS = new Set<string | symbol>(['newListener', 'removeListener', 'registration-error', 'error']);

/**
 * A connection to a libvirt driver. Every method that may reach the daemon runs
 * off the JS thread and returns a Promise; concurrent calls run concurrently.
 * After `close()`, every call on it and on its domains rejects with
 * `VIR_ERR_INVALID_CONN`.
 *
 * Events: a Node.js `EventEmitter` (`on`, `once`, `off`, `events.on(conn, ...)`
 * and `events.once(conn, ...)` all work). The libvirt registration of a kind is
 * made when its first listener is added (await `eventsReady()` to know it is in
 * place) and removed with its last. While one is registered the process stays
 * alive, like with a socket; with none, nothing here keeps it alive. Events of
 * all kinds arrive in the order libvirt sent them. There is no limit on the
 * number of listeners (`waitForJob()` adds one per waiting call).
 */
export class Connection extends EventEmitter<ConnectionEventMap> {
  readonly #native: NativeConnection;
  readonly #registrations: EventRegistrations;
  readonly #trackListener = (name: string | symbol): void => {
    if (isEventKind(name)) this.#registrations.sync(name);
    else if (!EMITTER_EVENTS.has(name)) throw new TypeError(`unknown event "${String(name)}"`);
  };
  readonly #untrackListener = (name: string | symbol): void => {
    if (isEventKind(name)) this.#registrations.sync(name);
  };
  #closing: Promise<void> | undefined;
  #libVersion: Promise<number> | undefined;

  /** @internal Use `connect()`. */
  constructor(native: NativeConnection) {
    super();
    this.setMaxListeners(0);
    this.#native = native;
    this.#registrations = new EventRegistrations({
      native,
      listenerCount: (kind) => this.listenerCount(kind),
      emit: (name, ...args) => {
        (this as EventEmitter).emit(name, ...args);
      },
      wrapDomain: (domain) => new Domain(this, domain),
    });
    // Registrations follow the listeners through the emitter's own events.
    const emitter = this as EventEmitter;
    emitter.on('newListener', this.#trackListener);
    emitter.on('removeListener', this.#untrackListener);
  }

  /** Removes listeners like EventEmitter's, but keeps the ones registrations follow. */
  override removeAllListeners(event?: keyof ConnectionEventMap | 'newListener' | 'removeListener'): this {
    const emitter = this as EventEmitter;
    const names = event === undefined ? emitter.eventNames() : [event];
    for (const name of names) {
      if (name === 'newListener' || name === 'removeListener') {
        const ours = name === 'newListener' ? this.#trackListener : this.#untrackListener;
        for (const listener of emitter.listeners(name)) {
          if (listener !== ours) emitter.off(name, listener as (...args: unknown[]) => void);
        }
      } else {
        super.removeAllListeners(name as keyof ConnectionEventMap);
      }
    }
    return this;
  }

  /**
   * Resolves once libvirt has the registrations for `kinds` (default: every kind
   * that has had listeners) queued so far; rejects with the failure of a kind
   * whose registration failed while it has listeners. Each caller gets the
   * outcome of the kinds it asks about, however many ask.
   */
  async eventsReady(...kinds: EventKind[]): Promise<void> {
    return this.#registrations.ready(kinds.length > 0 ? kinds : this.#registrations.knownKinds());
  }

  /**
   * Waits for an event of `kind` that `options.match` accepts (anything it
   * returns other than `undefined` and `false` is the result). The listener and
   * libvirt's registration are in place before `options.check` is first asked
   * whether it happened already, so nothing is missed between the two. Rejects
   * with the signal's reason on abort, with an error named `TimeoutError` after
   * `timeoutMs`, and with the registration's failure when libvirt refuses it
   * (unless `recheckMs` makes `check` carry the wait). Its listener is removed
   * however the wait ends.
   */
  waitFor<E extends EventKind, R>(kind: E, options: WaitForOptions<ConnectionEventMap[E], R>): Promise<Exclude<R, undefined | false>> {
    return waitForEvent(this, kind, options);
  }

  /** Keepalive for remote drivers (see `ConnectOptions.keepAlive`); in-process drivers reject with `VIR_ERR_NO_SUPPORT`. */
  async setKeepAlive(interval: number, count: number): Promise<boolean> {
    return this.#native.setKeepAlive(interval, count);
  }

  /**
   * libvirt's version on the daemon side, encoded as major * 1e6 + minor * 1e3 +
   * release. Asked once per connection; a failure is not kept, so the next call
   * asks again.
   */
  getLibVersion(): Promise<number> {
    let pending = this.#libVersion;
    if (pending === undefined) {
      pending = this.#native.getLibVersion();
      this.#libVersion = pending;
      const asked = pending;
      asked.catch(() => {
        if (this.#libVersion === asked) this.#libVersion = undefined;
      });
    }
    return pending;
  }

  /** @deprecated Use `getLibVersion()`, which now caches the same way. */
  libVersion(): Promise<number> {
    return this.getLibVersion();
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
    const version = await this.getLibVersion();
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

  /** True from the moment `close()` is called. */
  get closed(): boolean {
    return this.#closing !== undefined || this.#native.isClosed();
  }

  /**
   * Closes the connection. From the moment it is called, new calls on the
   * connection and on its domains and checkpoints reject; calls already in
   * flight run to their end, then libvirt's event registrations are removed and
   * the daemon connection ends, and only then does the promise resolve. Every
   * call returns the same promise. Listeners stay attached but receive nothing.
   */
  close(): Promise<void> {
    this.#registrations.closing();
    this.#closing ??= this.#native.close();
    return this.#closing;
  }

  /** The hypervisor's version (e.g. QEMU's), encoded like `getLibVersion()`. */
  async getVersion(): Promise<number> {
    return this.#native.getVersion();
  }

  /** The hypervisor host's name (virConnectGetHostname). */
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
    return this.#native.getDomainCapabilities(query.emulatorbin ?? null, query.arch ?? null, query.machine ?? null, query.virttype ?? null, query.flags ?? 0);
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

  /** Rejects with `VIR_ERR_NO_STORAGE_POOL` when there is none. */
  async lookupStoragePoolByName(name: string): Promise<StoragePool> {
    return new StoragePool(this, await this.#native.lookupStoragePoolByName(name));
  }

  /** Creates and starts a transient pool (gone once destroyed), from XML or a typed spec. */
  async createStoragePool(pool: string | DirStoragePoolSpec, flags = 0): Promise<StoragePool> {
    const xml = typeof pool === 'string' ? pool : buildStoragePoolXml(pool);
    return new StoragePool(this, await this.#native.createStoragePool(xml, flags));
  }

  /** Defines a persistent pool (not started: `StoragePool.start()`). */
  async defineStoragePool(pool: string | DirStoragePoolSpec, flags = 0): Promise<StoragePool> {
    const xml = typeof pool === 'string' ? pool : buildStoragePoolXml(pool);
    return new StoragePool(this, await this.#native.defineStoragePool(xml, flags));
  }

  /** All storage pools, filtered by `ListStoragePoolsFlags`. */
  async listAllStoragePools(flags = 0): Promise<StoragePool[]> {
    const natives = await this.#native.listAllStoragePools(flags);
    return natives.map((native) => new StoragePool(this, native));
  }

  /**
   * A new stream for `StorageVolume` transfers you drive yourself (`upload()` and
   * `download()` make their own). Throws a `LibvirtError` once the connection is closed.
   */
  newStream(flags = 0): Stream {
    return new Stream(this, this.#native.newStream(flags));
  }
}
