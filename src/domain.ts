import type { Connection } from './connection.js';
import { DomainState, QemuMonitorCommandFlags } from './constants.js';
import type { NativeDomain } from './native.js';

export interface DomainStateInfo {
  state: DomainState;
  /** One of the `Domain*Reason` enums matching `state`. */
  reason: number;
}

export interface QemuMonitorCommandOptions {
  /** Send a human monitor (HMP) command instead of QMP JSON. */
  hmp?: boolean;
  /** Raw `QemuMonitorCommandFlags`. */
  flags?: number;
}

/** A libvirt domain (virtual machine), obtained from a `Connection`. */
export class Domain {
  readonly connection: Connection;
  readonly #native: NativeDomain;

  /** @internal Domains come from a Connection. */
  constructor(connection: Connection, native: NativeDomain) {
    this.connection = connection;
    this.#native = native;
  }

  /** @internal */
  get native(): NativeDomain {
    return this.#native;
  }

  /** The domain's name (known locally, no daemon round trip). */
  get name(): string {
    return this.#native.getName();
  }

  /** The domain's UUID as a string (known locally). */
  get uuid(): string {
    return this.#native.getUUIDString();
  }

  /** The hypervisor ID while running, `null` when shut off. */
  async getId(): Promise<number | null> {
    return this.#native.getId();
  }

  /** The domain XML; `DomainXMLFlags` select inactive/secure/migratable forms. */
  async getXMLDesc(flags = 0): Promise<string> {
    return this.#native.getXMLDesc(flags);
  }

  async getState(): Promise<DomainStateInfo> {
    const { state, reason } = await this.#native.getState();
    return { state: state as DomainState, reason };
  }

  async isActive(): Promise<boolean> {
    return this.#native.isActive();
  }

  async isPersistent(): Promise<boolean> {
    return this.#native.isPersistent();
  }

  /** Starts a defined domain (`virDomainCreateWithFlags`). */
  async start(flags = 0): Promise<void> {
    return this.#native.start(flags);
  }

  /** Asks the guest to shut down; returns before it has. */
  async shutdown(flags = 0): Promise<void> {
    return this.#native.shutdown(flags);
  }

  /** Stops the domain at once, like pulling the plug. */
  async destroy(flags = 0): Promise<void> {
    return this.#native.destroy(flags);
  }

  /** Removes a persistent domain's definition (`UndefineFlags`). */
  async undefine(flags = 0): Promise<void> {
    return this.#native.undefine(flags);
  }

  /**
   * Sends a command straight to QEMU's monitor (libvirt-qemu). Unsupported by
   * libvirt's policy: meant for tests and debugging, e.g. `qemu-io` writes.
   */
  async qemuMonitorCommand(command: string, options: QemuMonitorCommandOptions = {}): Promise<string> {
    const flags = (options.flags ?? 0) | (options.hmp === true ? QemuMonitorCommandFlags.HMP : 0);
    return this.#native.qemuMonitorCommand(command, flags);
  }
}
