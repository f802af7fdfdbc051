// Access to the real libvirtd that scripts/setup-host.sh starts. Tests never skip
// when it is missing: they fail, saying how to start it.
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';

import { connect, type Connection, type Domain, LibvirtError, UndefineFlags } from '../../src/index.js';
import { run } from './process.js';

export const SYSTEM_URI = 'qemu:///system';
export const IMAGE_DIR = '/var/lib/libvirt/images';
const NAME_PREFIX = 'lvbt';

export async function connectSystem(): Promise<Connection> {
  try {
    return await connect(SYSTEM_URI);
  } catch (error) {
    throw new Error(
      `libvirtd is not reachable on ${SYSTEM_URI}: ${(error as Error).message}. ` + 'Run `bash scripts/setup-host.sh` as root to install and start it.',
      { cause: error },
    );
  }
}

let virtTypeCache: Promise<'kvm' | 'qemu'> | undefined;

/**
 * 'kvm' where the host can run KVM guests, else 'qemu' (TCG emulation).
 * `TEST_DOMAIN_VIRT_TYPE=qemu` runs the guests under emulation on a KVM host too, as CI
 * machines without /dev/kvm do.
 */
export function virtType(conn: Connection): Promise<'kvm' | 'qemu'> {
  if (process.env.TEST_DOMAIN_VIRT_TYPE === 'qemu') return Promise.resolve('qemu');
  virtTypeCache ??= conn
    .getDomainCapabilities({ virttype: 'kvm', arch: 'x86_64' })
    .then((xml) => (/<domain>kvm<\/domain>/.test(xml) ? 'kvm' : 'qemu'))
    .catch(() => 'qemu' as const);
  return virtTypeCache;
}

/** A name no other test (or test process) uses; carries our pid for stale sweeping. */
export function uniqueName(label: string): string {
  return `${NAME_PREFIX}-${label}-${process.pid}-${randomBytes(4).toString('hex')}`;
}

let swept = false;

/** Removes domains and images left by test processes that died without cleaning up. */
export async function sweepStaleTestDomains(conn: Connection): Promise<void> {
  if (swept) return;
  swept = true;
  for (const domain of await conn.listAllDomains()) {
    const match = new RegExp(`^${NAME_PREFIX}-.+-(\\d+)-[0-9a-f]{8}$`).exec(domain.name);
    if (!match) continue;
    const pid = Number(match[1]);
    if (pidAlive(pid)) continue;
    await destroyAndUndefine(domain).catch(() => undefined);
    await run('sh', ['-c', `rm -f ${IMAGE_DIR}/${domain.name}-*`]).catch(() => undefined);
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function destroyAndUndefine(domain: Domain): Promise<void> {
  try {
    await domain.destroy();
  } catch (error) {
    if (!(error instanceof LibvirtError && error.codeName === 'VIR_ERR_OPERATION_INVALID')) throw error;
  }
  try {
    await domain.undefine(UndefineFlags.CHECKPOINTS_METADATA | UndefineFlags.SNAPSHOTS_METADATA);
  } catch (error) {
    // A transient domain is gone once destroyed.
    if (!(error instanceof LibvirtError && ['VIR_ERR_NO_DOMAIN', 'VIR_ERR_OPERATION_INVALID'].includes(error.codeName))) {
      throw error;
    }
  }
}

export interface DiskSpec {
  format?: 'qcow2' | 'raw';
  sizeMiB?: number;
}

export interface ThrowawayDomain {
  name: string;
  domain: Domain;
  /** Image path per disk, in target order (vda, vdb, ...). */
  disks: Array<{ target: string; path: string; format: 'qcow2' | 'raw' }>;
  /** Destroys and undefines the domain and removes its images. Idempotent. */
  cleanup(): Promise<void>;
}

/**
 * Defines and starts a domain with no OS and the given disks (virtio, vda...).
 * Persistent by default so checkpoint metadata survives like in production.
 */
export async function createThrowawayDomain(
  conn: Connection,
  label: string,
  disks: DiskSpec[] = [{}],
  options: { start?: boolean } = {},
): Promise<ThrowawayDomain> {
  await sweepStaleTestDomains(conn);
  const name = uniqueName(label);
  const type = await virtType(conn);
  const made: ThrowawayDomain['disks'] = [];
  let domain: Domain | undefined;
  const cleanup = async () => {
    if (domain) await destroyAndUndefine(domain).catch(() => undefined);
    domain = undefined;
    await Promise.all(made.map((d) => rm(d.path, { force: true })));
  };
  try {
    for (const [i, spec] of disks.entries()) {
      const format = spec.format ?? 'qcow2';
      const target = `vd${String.fromCharCode(97 + i)}`;
      const path = `${IMAGE_DIR}/${name}-${target}.${format}`;
      await run('qemu-img', ['create', '-q', '-f', format, path, `${spec.sizeMiB ?? 16}M`]);
      made.push({ target, path, format });
    }
    // Test fixture only: names and paths are generated above, nothing to escape.
    const diskXml = made
      .map(
        (d) =>
          `<disk type='file' device='disk'><driver name='qemu' type='${d.format}'/>` +
          `<source file='${d.path}'/><target dev='${d.target}' bus='virtio'/></disk>`,
      )
      .join('');
    const xml =
      `<domain type='${type}'><name>${name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>` +
      `<os><type arch='x86_64'>hvm</type></os><devices>${diskXml}</devices></domain>`;
    domain = await conn.defineDomain(xml);
    if (options.start !== false) await domain.start();
    return { name, domain, disks: made, cleanup };
  } catch (error) {
    await cleanup();
    throw error;
  }
}

/**
 * Writes `length` bytes of `pattern` at `offset` into a running domain's disk the
 * way a guest would, through QEMU's qemu-io (dirty bitmaps see these writes).
 */
export async function guestWrite(domain: Domain, diskIndex: number, pattern: number, offset: number | string, length: number | string): Promise<void> {
  const device = `/machine/peripheral/virtio-disk${diskIndex}/virtio-backend`;
  const reply = await domain.qemuMonitorCommand(`qemu-io -d ${device} "write -P 0x${pattern.toString(16)} ${offset} ${length}"`, { hmp: true });
  if (/error|fail/i.test(reply)) throw new Error(`qemu-io write failed: ${reply}`);
  // Push QEMU's cached qcow2 metadata to the file so tools reading the image see it.
  const flushed = await domain.qemuMonitorCommand(`qemu-io -d ${device} "flush"`, { hmp: true });
  if (/error|fail/i.test(flushed)) throw new Error(`qemu-io flush failed: ${flushed}`);
}
