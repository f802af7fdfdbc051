// Connection events: what they carry, and the libvirt registrations behind them.
// A registration is made when the first listener of a kind is added and removed
// with the last; each kind's registrations and removals run one after another,
// so quick on/off sequences never leave one behind or register twice.
import { type BlockJobStatus, type BlockJobType, type CloseReason, DomainEventID, type LifecycleEvent } from './constants.js';
import type { Domain } from './domain.js';
import { toJobStats, type JobStats } from './jobs.js';
import type { NativeConnection, NativeDomain, NativeEvent } from './native.js';

/** What a `'lifecycle'` event says: the event and its detail. */
export interface LifecyclePayload {
  event: LifecycleEvent;
  /** One of the `Lifecycle*Detail` enums, depending on `event`. */
  detail: number;
}

/** What a `'block-job'` event says about a block job. */
export interface BlockJobPayload {
  /** The disk's target (`vda`) or source path, as libvirt reports it. */
  disk: string;
  type: BlockJobType;
  status: BlockJobStatus;
}

/** The events that stand for a libvirt registration (made with their first listener). */
export type EventKind = 'lifecycle' | 'job-completed' | 'block-job' | 'reboot' | 'close';

export const EVENT_KINDS: readonly EventKind[] = ['lifecycle', 'job-completed', 'block-job', 'reboot', 'close'];

/** A connection's events and the arguments their listeners receive. */
export interface ConnectionEventMap {
  lifecycle: [domain: Domain, payload: LifecyclePayload];
  'job-completed': [domain: Domain, stats: JobStats];
  'block-job': [domain: Domain, payload: BlockJobPayload];
  reboot: [domain: Domain];
  /** The connection to the daemon closed by itself (not by `close()`). */
  close: [reason: CloseReason];
  /**
   * libvirt refused the registration (or removal) for `kind`. Listeners of that
   * kind get nothing until a registration succeeds: adding another listener of
   * the kind tries again. Never an unhandled `'error'`.
   */
  'registration-error': [error: Error, kind: EventKind];
  /**
   * Never emitted (a failed registration is `'registration-error'`); listened to
   * by `events.on()` and `events.once()`, which is why it is accepted.
   */
  error: [error: Error];
}

/** The events a `Connection` emits. */
export type ConnectionEventName = keyof ConnectionEventMap;

/** Listener signatures per event name. */
export type ConnectionEvents = { [E in ConnectionEventName]: (...args: ConnectionEventMap[E]) => void };

const DOMAIN_EVENT_IDS: Record<Exclude<EventKind, 'close'>, DomainEventID> = {
  lifecycle: DomainEventID.LIFECYCLE,
  'job-completed': DomainEventID.JOB_COMPLETED,
  'block-job': DomainEventID.BLOCK_JOB_2,
  reboot: DomainEventID.REBOOT,
};

export function isEventKind(name: unknown): name is EventKind {
  return typeof name === 'string' && (EVENT_KINDS as readonly string[]).includes(name);
}

type Emit = <E extends ConnectionEventName>(name: E, ...args: ConnectionEventMap[E]) => void;

interface KindState {
  /** Settles when the last queued registration or removal has run. */
  queue: Promise<void>;
  registered: boolean;
  callbackId: number | null;
  /** Why the latest registration failed, while it stands. */
  failure: Error | undefined;
}

export interface EventRegistrationsHost {
  native: NativeConnection;
  listenerCount(kind: EventKind): number;
  emit: Emit;
  wrapDomain(native: NativeDomain): Domain;
}

/**
 * The registrations of connections that libvirt may send events to. The addon holds
 * a connection's event handler for as long as the connection exists, so the handler
 * reaches its registrations only through a WeakRef: a connection nobody uses, with no
 * listener left, can be collected (and its daemon connection closed). One with a
 * registration is kept here instead, so that its listeners hear every event even when
 * nothing else refers to the connection.
 */
const keptWhileRegistered = new Set<EventRegistrations>();

/** Keeps libvirt's registrations of one connection in line with its listeners. */
export class EventRegistrations {
  readonly #host: EventRegistrationsHost;
  readonly #kinds = new Map<EventKind, KindState>();
  #handlerSet = false;
  /** Registrations sent and not answered yet: libvirt may already send their events. */
  #registering = 0;

  constructor(host: EventRegistrationsHost) {
    this.#host = host;
  }

  /** Queues whatever brings `kind`'s registration in line with its listener count. */
  sync(kind: EventKind): void {
    const state = this.#state(kind);
    state.queue = state.queue.then(() => this.#apply(kind, state));
  }

  /**
   * Waits for the registrations and removals queued so far for `kinds`; rejects
   * with the failure of the first of them whose registration failed and still has
   * listeners. Every caller gets the outcome of the kinds it asked about.
   */
  async ready(kinds: readonly EventKind[]): Promise<void> {
    const states = kinds.map((kind) => this.#kinds.get(kind));
    await Promise.all(states.map(async (state) => state?.queue));
    for (const [index, kind] of kinds.entries()) {
      const failure = states[index]?.failure;
      if (failure !== undefined && this.#host.listenerCount(kind) > 0) throw failure;
    }
  }

  /** The connection is closing: libvirt sends it nothing more, nothing needs to keep it. */
  closing(): void {
    keptWhileRegistered.delete(this);
  }

  /** The kinds with a registration, pending or done, or a failed one. */
  knownKinds(): EventKind[] {
    return [...this.#kinds.keys()];
  }

  #state(kind: EventKind): KindState {
    let state = this.#kinds.get(kind);
    if (state === undefined) {
      state = { queue: Promise.resolve(), registered: false, callbackId: null, failure: undefined };
      this.#kinds.set(kind, state);
    }
    return state;
  }

  async #apply(kind: EventKind, state: KindState): Promise<void> {
    const { native } = this.#host;
    if (native.isClosed()) {
      // close() removed libvirt's side of every registration.
      state.registered = false;
      state.callbackId = null;
      state.failure = undefined;
      return;
    }
    const wanted = this.#host.listenerCount(kind) > 0;
    if (wanted === state.registered) {
      if (!wanted) state.failure = undefined;
      return;
    }
    try {
      if (wanted) {
        this.#ensureHandler();
        this.#registering++;
        this.#keepIfRegistered();
        try {
          if (kind === 'close') await native.registerCloseCallback();
          else state.callbackId = await native.registerDomainEvent(DOMAIN_EVENT_IDS[kind]);
        } finally {
          this.#registering--;
        }
        state.registered = true;
        state.failure = undefined;
      } else {
        const callbackId = state.callbackId;
        state.registered = false;
        state.callbackId = null;
        state.failure = undefined;
        if (kind === 'close') await native.unregisterCloseCallback();
        else await native.deregisterDomainEvent(callbackId!);
      }
    } catch (error) {
      if (native.isClosed()) return;
      const failure = error instanceof Error ? error : new Error(String(error));
      if (wanted) state.failure = failure;
      this.#host.emit('registration-error', failure, kind);
    } finally {
      this.#keepIfRegistered();
    }
  }

  #keepIfRegistered(): void {
    const registered = !this.#host.native.isClosed() && (this.#registering > 0 || [...this.#kinds.values()].some((state) => state.registered));
    if (registered) keptWhileRegistered.add(this);
    else keptWhileRegistered.delete(this);
  }

  #ensureHandler(): void {
    if (this.#handlerSet) return;
    const registrations = new WeakRef(this);
    this.#host.native.setEventHandler((event) => {
      const alive = registrations.deref();
      if (alive !== undefined) alive.#deliver(event);
    });
    this.#handlerSet = true;
  }

  #deliver(event: NativeEvent): void {
    const { emit, wrapDomain } = this.#host;
    switch (event.kind) {
      case 'lifecycle':
        emit('lifecycle', wrapDomain(event.domain), { event: event.event as LifecycleEvent, detail: event.detail });
        break;
      case 'job-completed':
        emit('job-completed', wrapDomain(event.domain), toJobStats(event.params));
        break;
      case 'block-job':
        emit('block-job', wrapDomain(event.domain), {
          disk: event.disk,
          type: event.type as BlockJobType,
          status: event.status as BlockJobStatus,
        });
        break;
      case 'reboot':
        emit('reboot', wrapDomain(event.domain));
        break;
      case 'close':
        emit('close', event.reason as CloseReason);
        break;
    }
  }
}
