// A running domain whose disks each have a raw reference image receiving the same
// writes, so the content of every backup point is known without asking the product.
import { copyFile, rm } from 'node:fs/promises';
import { join } from 'node:path';

import { type Domain, LibvirtError } from '../../src/index.js';
import { destroyAndUndefine, IMAGE_DIR, uniqueName, virtType } from '../../test/helpers/daemon.js';
import { run, tryRun } from '../../test/helpers/process.js';
import { guestCommand, referenceCommands, type DiskGeometry, type GuestWrite } from './guest-writes.js';
import { compareImages } from './image-compare.js';
import type { LibvirtLink } from './libvirt-link.js';

export interface MirroredDisk extends DiskGeometry {
  target: string;
  /** The running disk (qcow2). */
  image: string;
  /** What the guest would read from it now (raw). */
  reference: string;
}

export interface MirroredDomainOptions {
  label: string;
  sizesMiB: number[];
  /** `qemu` forces emulation (as on hosts without /dev/kvm); `auto` uses KVM when present. */
  virtualization: 'auto' | 'qemu';
  referenceDir: string;
  sources: readonly string[];
}

export class MirroredDomain {
  private constructor(
    readonly name: string,
    readonly disks: readonly MirroredDisk[],
    private readonly link: LibvirtLink,
    private readonly referenceDir: string,
    private readonly sources: readonly string[],
  ) {}

  static async create(link: LibvirtLink, options: MirroredDomainOptions): Promise<MirroredDomain> {
    const conn = await link.connection();
    const name = uniqueName(options.label);
    const type = options.virtualization === 'qemu' ? 'qemu' : await virtType(conn);
    const disks: MirroredDisk[] = [];
    const made = new MirroredDomain(name, disks, link, options.referenceDir, options.sources);
    try {
      for (const [index, sizeMiB] of options.sizesMiB.entries()) {
        const target = `vd${String.fromCharCode(97 + index)}`;
        const image = `${IMAGE_DIR}/${name}-${target}.qcow2`;
        const reference = join(options.referenceDir, `live-${target}.raw`);
        await run('qemu-img', ['create', '-q', '-f', 'qcow2', image, `${sizeMiB}M`]);
        await run('qemu-img', ['create', '-q', '-f', 'raw', reference, `${sizeMiB}M`]);
        const info = JSON.parse(await run('qemu-img', ['info', '--output=json', image])) as { 'cluster-size': number; 'virtual-size': number };
        disks.push({ target, image, reference, sizeBytes: info['virtual-size'], clusterBytes: info['cluster-size'] });
      }
      // discard='unmap': without it QEMU ignores the guest's discards (libvirt's
      // default), and the soak would never back up a deallocated cluster.
      const diskXml = disks
        .map(
          (disk) =>
            `<disk type='file' device='disk'><driver name='qemu' type='qcow2' discard='unmap'/>` +
            `<source file='${disk.image}'/><target dev='${disk.target}' bus='virtio'/></disk>`,
        )
        .join('');
      const xml =
        `<domain type='${type}'><name>${name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>` +
        `<os><type arch='x86_64'>hvm</type></os><devices>${diskXml}</devices></domain>`;
      const domain = await conn.defineDomain(xml);
      await domain.start();
      return made;
    } catch (error) {
      await made.cleanup();
      throw error;
    }
  }

  /** Applies the writes to the running disks and to their references. */
  async apply(writes: readonly GuestWrite[]): Promise<void> {
    const touched = new Set<number>();
    await this.link.withDomain(this.name, async (domain) => {
      for (const write of writes) {
        await this.monitorQemuIo(domain, write.disk, guestCommand(write, this.sources));
        touched.add(write.disk);
      }
      // Written-back qcow2 metadata lets tools read the live image consistently (-U).
      for (const disk of touched) await this.monitorQemuIo(domain, disk, 'flush');
    });
    for (const disk of touched) {
      const geometry = this.disks[disk]!;
      const commands = writes.filter((write) => write.disk === disk).flatMap((write) => referenceCommands(write, this.sources, geometry));
      if (commands.length > 0) await run('qemu-io', ['-f', 'raw', ...commands.flatMap((command) => ['-c', command]), geometry.reference]);
    }
  }

  private async monitorQemuIo(domain: Domain, disk: number, command: string): Promise<void> {
    const device = `/machine/peripheral/virtio-disk${disk}/virtio-backend`;
    const reply = await domain.qemuMonitorCommand(`qemu-io -d ${device} "${command}"`, { hmp: true });
    if (/error|fail|invalid/i.test(reply)) throw new Error(`qemu-io '${command}' on ${this.name} disk ${disk} failed: ${reply.trim()}`);
  }

  /** Keeps a copy of every reference as it is now, under `label`; returns their paths in disk order. */
  async snapshot(label: string): Promise<string[]> {
    const paths = this.disks.map((disk) => this.snapshotPath(label, disk.target));
    for (const [index, disk] of this.disks.entries()) await run('cp', ['--sparse=always', disk.reference, paths[index]!]);
    return paths;
  }

  /** A second name for a snapshot (two backup points with the same content). */
  async copySnapshot(from: string, to: string): Promise<void> {
    for (const disk of this.disks) await copyFile(this.snapshotPath(from, disk.target), this.snapshotPath(to, disk.target));
  }

  snapshotPath(label: string, target: string): string {
    return join(this.referenceDir, `${label}-${target}.raw`);
  }

  async removeSnapshot(label: string): Promise<void> {
    for (const disk of this.disks) await rm(this.snapshotPath(label, disk.target), { force: true });
  }

  /**
   * Disks whose running image differs from its reference: the soak's model of the
   * writes is wrong there (not the product), so any restore mismatch is meaningless.
   */
  async modelMismatches(): Promise<string[]> {
    const mismatches: string[] = [];
    for (const disk of this.disks) {
      const comparison = await compareImages({ path: disk.image, format: 'qcow2' }, { path: disk.reference, format: 'raw' }, { shared: true });
      if (!comparison.identical) mismatches.push(`${disk.target}: ${comparison.detail}`);
    }
    return mismatches;
  }

  async isActive(): Promise<boolean> {
    return this.link.withDomain(this.name, (domain) => domain.isActive());
  }

  async destroy(): Promise<void> {
    await this.link.withDomain(this.name, (domain) => domain.destroy());
  }

  async start(): Promise<void> {
    await this.link.withDomain(this.name, (domain) => domain.start());
  }

  /** Destroys and undefines the domain (with its checkpoint metadata) and removes its images. */
  async cleanup(): Promise<void> {
    try {
      const conn = await this.link.connection();
      await destroyAndUndefine(await conn.lookupDomainByName(this.name));
    } catch (error) {
      if (!(error instanceof LibvirtError && error.codeName === 'VIR_ERR_NO_DOMAIN')) {
        // Still remove the images; the stale-domain sweep of the tests gets the rest.
        await tryRun('virsh', ['-c', this.link.uri, 'undefine', this.name, '--checkpoints-metadata']);
      }
    }
    for (const disk of this.disks) await rm(disk.image, { force: true });
  }
}
