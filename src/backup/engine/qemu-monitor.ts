// QEMU's monitor reached through libvirt-qemu (`virDomainQemuMonitorCommand`), for the
// few states libvirt 9.0 leaves that its own API cannot see or end. libvirt marks a
// domain whose monitor was used this way as tainted (custom-monitor): callers say so.
import type { Domain } from '../../libvirt/domain.js';
import { BackupError } from './engine-types.js';

export interface QemuJob {
  id: string;
  type: string;
  status: string;
}

export interface QemuNode {
  'node-name': string;
  file?: string;
  'dirty-bitmaps'?: { name?: string; persistent?: boolean }[];
}

/** QMP through libvirt-qemu, with QEMU's errors turned into ours. */
export class QemuMonitor {
  constructor(private readonly domain: Domain) {}

  async command(execute: string, args?: Record<string, unknown>): Promise<unknown> {
    const reply = JSON.parse(await this.domain.qemuMonitorCommand(JSON.stringify(args === undefined ? { execute } : { execute, arguments: args }))) as {
      return?: unknown;
      error?: { class?: string; desc?: string };
    };
    if (reply.error !== undefined) {
      throw new BackupError(
        'DOMAIN_BUSY',
        `QEMU refused ${execute} on domain ${this.domain.name}: ${reply.error.desc ?? reply.error.class ?? 'unknown error'}`,
      );
    }
    return reply.return;
  }
}
