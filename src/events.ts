// Connection events: libvirt registrations made when the first listener of a
// kind is added and removed with the last, serialised per kind so quick on/off
// sequences never leave a registration behind or register twice.
import { BlockJobStatus, BlockJobType, CloseReason, DomainEventID, LifecycleEvent } from './constants.js';
import type { Domain } from './domain.js';
import { toJobStats, type JobStats } from './jobs.js';
import type { NativeConnection, NativeDomain, NativeEventPayload } from './native.js';

export interface LifecyclePayload {
  event: LifecycleEvent;
  /** One of the `Lifecycle*Detail` enums, depending on `event`. */
  detail: number;
}

export interface BlockJobPayload {
  /** The disk's target (`vda`) or source path, as libvirt reports it. */
  disk: string;
  type: BlockJobType;
  status: BlockJobStatus;
}

export interface ConnectionEvents {
  lifecycle: (domain: Domain, payload: LifecyclePayload) => void;
  'job-completed': (domain: Domain, payload: JobStats) => void;
  'block-job': (domain: Domain, payload: BlockJobPayload) => void;
  reboot: (domain: Domain) => void;
  /** The connection to the daemon closed by itself (not by `close()`). */
  close: (reason: CloseReason) => void;
  /** A libvirt registration for one of the other events failed. */
  error: (error: Error) => void;
}

export type ConnectionEventName = keyof ConnectionEvents;

const DOMAIN_EVENT_IDS: Partial<Record<ConnectionEventName, DomainEventID>> = {
  lifecycle: DomainEventID.LIFECYCLE,
  'job-completed': DomainEventID.JOB_COMPLETED,
  'block-job': DomainEventID.BLOCK_JOB_2,
  reboot: DomainEventID.REBOOT,
};

type AnyListener = (...args: never[]) => void;

interface Kind {
  listeners: Array<{ listener: AnyListener; once: boolean }>;
  /** Resolves when the last queued register/deregister has run. */
  queue: Promise<void>;
  callbackId: number | null;
  closeRegistered: boolean;
}

export class EventHub {
  readonly #native: NativeConnection;
  readonly #wrapDomain: (native: NativeDomain) => Domain;
  readonly #kinds = new Map<ConnectionEventName, Kind>();
  #failures: Error[] = [];

  constructor(native: NativeConnection, wrapDomain: (native: NativeDomain) => Domain) {
    this.#native = native;
    this.#wrapDomain = wrapDomain;
  }

  add(name: ConnectionEventName, listener: AnyListener, once: boolean): void {
    if (typeof listener !== 'function') throw new TypeError('The "listener" argument must be a function');
    if (name !== 'error' && name !== 'close' && DOMAIN_EVENT_IDS[name] === undefined) {
      throw new TypeError(`unknown event "${String(name)}"`);
    }
    const kind = this.#kind(name);
    kind.listeners.push({ listener, once });
    if (kind.listeners.length === 1 && name !== 'error') this.#sync(name, kind);
  }

  remove(name: ConnectionEventName, listener: AnyListener): void {
    const kind = this.#kinds.get(name);
    if (!kind) return;
    const index = kind.listeners.findIndex((entry) => entry.listener === listener);
    if (index === -1) return;
    kind.listeners.splice(index, 1);
    if (kind.listeners.length === 0 && name !== 'error') this.#sync(name, kind);
  }

  removeAll(): void {
    for (const [name, kind] of this.#kinds) {
      if (kind.listeners.length === 0) continue;
      kind.listeners = [];
      if (name !== 'error') this.#sync(name, kind);
    }
  }

  listenerCount(name: ConnectionEventName): number {
    return this.#kinds.get(name)?.listeners.length ?? 0;
  }

  /** Waits for pending libvirt registrations; rejects with the first that failed. */
  async ready(): Promise<void> {
    await Promise.all([...this.#kinds.values()].map((kind) => kind.queue));
    const failure = this.#failures.shift();
    if (failure) {
      this.#failures = [];
      throw failure;
    }
  }

  #kind(name: ConnectionEventName): Kind {
    let kind = this.#kinds.get(name);
    if (!kind) {
      kind = { listeners: [], queue: Promise.resolve(), callbackId: null, closeRegistered: false };
      this.#kinds.set(name, kind);
    }
    return kind;
  }

  /** Queues whatever brings libvirt's registration in line with the listener count. */
  #sync(name: ConnectionEventName, kind: Kind): void {
    kind.queue = kind.queue.then(async () => {
      const wanted = kind.listeners.length > 0;
      try {
        if (name === 'close') await this.#syncClose(kind, wanted);
        else await this.#syncDomainEvent(name, kind, wanted);
      } catch (error) {
        this.#fail(error as Error);
      }
    });
  }

  async #syncDomainEvent(name: ConnectionEventName, kind: Kind, wanted: boolean): Promise<void> {
    if (wanted && kind.callbackId === null) {
      kind.callbackId = await this.#native.registerDomainEvent(DOMAIN_EVENT_IDS[name]!, (domain, payload) =>
        this.#dispatchDomainEvent(name, domain, payload),
      );
    } else if (!wanted && kind.callbackId !== null) {
      const id = kind.callbackId;
      kind.callbackId = null;
      if (!this.#native.isClosed()) await this.#native.deregisterDomainEvent(id);
    }
  }

  async #syncClose(kind: Kind, wanted: boolean): Promise<void> {
    if (wanted && !kind.closeRegistered) {
      await this.#native.registerCloseCallback((reason) => this.#emit('close', [reason as CloseReason]));
      kind.closeRegistered = true;
    } else if (!wanted && kind.closeRegistered) {
      kind.closeRegistered = false;
      if (!this.#native.isClosed()) await this.#native.unregisterCloseCallback();
    }
  }

  #dispatchDomainEvent(name: ConnectionEventName, native: NativeDomain, payload: NativeEventPayload): void {
    const domain = this.#wrapDomain(native);
    switch (name) {
      case 'lifecycle':
        this.#emit(name, [domain, { event: payload.event as LifecycleEvent, detail: payload.detail ?? 0 }]);
        break;
      case 'job-completed':
        this.#emit(name, [domain, toJobStats(payload.params ?? {})]);
        break;
      case 'block-job':
        this.#emit(name, [
          domain,
          { disk: payload.disk ?? '', type: payload.type as BlockJobType, status: payload.status as BlockJobStatus },
        ]);
        break;
      case 'reboot':
        this.#emit(name, [domain]);
        break;
      default:
        break;
    }
  }

  #emit(name: ConnectionEventName, args: unknown[]): void {
    const kind = this.#kinds.get(name);
    if (!kind || kind.listeners.length === 0) return;
    // A snapshot: listeners added or removed by a listener take effect next time.
    const current = [...kind.listeners];
    for (const entry of current) {
      if (entry.once) this.remove(name, entry.listener);
      (entry.listener as (...a: unknown[]) => void)(...args);
    }
  }

  #fail(error: Error): void {
    this.#failures.push(error);
    this.#emit('error', [error]);
  }
}
