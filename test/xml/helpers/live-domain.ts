import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { DOMParser, XMLSerializer } from '@xmldom/xmldom';

const run = promisify(execFile);
const URI = 'qemu:///system';
const IMAGE_DIR = '/var/lib/libvirt/images';

/**
 * The libvirt calls the XML tests need, in one place so that they can move
 * from virsh to our own binding without touching the tests: each method maps
 * to one libvirt API (named in its comment).
 */
export interface LiveDomain {
  readonly name: string;
  readonly workDir: string;
  /** virDomainGetXMLDesc */
  domainXml(): Promise<string>;
  /** virDomainCheckpointCreateXML, optionally with REDEFINE */
  createCheckpoint(xml: string, options?: { redefine?: boolean }): Promise<void>;
  /** virDomainCheckpointGetXMLDesc, optionally with SIZE */
  checkpointXml(name: string, options?: { size?: boolean }): Promise<string>;
  /** virDomainBackupBegin */
  backupBegin(backupXml: string, checkpointXml?: string): Promise<void>;
  /** virDomainBackupGetXMLDesc */
  backupXml(): Promise<string>;
  /** virDomainAbortJob */
  abortJob(): Promise<void>;
  /** Waits until no job runs (a push backup finishing by itself). */
  waitForJobEnd(timeoutMs?: number): Promise<void>;
  /** Writes guest-visible data into a disk, as a guest would, so that bitmaps see it. */
  guestWrite(diskIndex: number, offset: string, length: string): Promise<void>;
  /** Destroys the transient domain and removes its images and work files. */
  dispose(): Promise<void>;
}

async function virsh(...args: string[]): Promise<string> {
  try {
    const { stdout } = await run('virsh', ['-c', URI, ...args], { maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  } catch (error) {
    const failure = error as { stderr?: string; message: string };
    throw new Error(`virsh ${args.join(' ')} failed: ${failure.stderr?.trim() || failure.message}`);
  }
}

/** Whether the daemon answers; the reason when it does not. */
export async function probeDaemon(): Promise<string | undefined> {
  try {
    await virsh('version');
    return undefined;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
}

export interface DiskPlan {
  dev: string;
  format: 'qcow2' | 'raw';
}

const DOMAIN_TEMPLATE = `<domain type="kvm"><name/><memory unit="MiB">64</memory><vcpu>1</vcpu><os><type arch="x86_64">hvm</type></os><devices/></domain>`;

/** Domain XML for a throwaway guest, built through the DOM like everything else here. */
function domainDefinition(name: string, disks: ReadonlyArray<DiskPlan & { path: string }>): string {
  const document = new DOMParser().parseFromString(DOMAIN_TEMPLATE, 'text/xml');
  const root = document.documentElement!;
  // Without /dev/kvm QEMU still runs the guest, just emulated.
  root.setAttribute('type', existsSync('/dev/kvm') ? 'kvm' : 'qemu');
  root.getElementsByTagName('name').item(0)!.appendChild(document.createTextNode(name));
  const devices = root.getElementsByTagName('devices').item(0)!;
  for (const disk of disks) {
    const element = document.createElement('disk');
    element.setAttribute('type', 'file');
    element.setAttribute('device', 'disk');
    const driver = document.createElement('driver');
    driver.setAttribute('name', 'qemu');
    driver.setAttribute('type', disk.format);
    const source = document.createElement('source');
    source.setAttribute('file', disk.path);
    const target = document.createElement('target');
    target.setAttribute('dev', disk.dev);
    target.setAttribute('bus', 'virtio');
    element.appendChild(driver);
    element.appendChild(source);
    element.appendChild(target);
    devices.appendChild(element);
  }
  return new XMLSerializer().serializeToString(document);
}

/** Starts a transient domain with the given disks (64 MiB images); names are unique per call. */
export async function startLiveDomain(disks: readonly DiskPlan[]): Promise<LiveDomain> {
  const name = `lvb-xml-${randomBytes(5).toString('hex')}`;
  const workDir = await mkdtemp(join(tmpdir(), `${name}-`));
  const images = disks.map((disk) => ({ ...disk, path: join(IMAGE_DIR, `${name}-${disk.dev}.${disk.format}`) }));
  let started = false;
  let fileCounter = 0;
  const writeTemp = async (xml: string): Promise<string> => {
    const file = join(workDir, `doc-${fileCounter++}.xml`);
    await writeFile(file, xml);
    return file;
  };
  const dispose = async (): Promise<void> => {
    if (started) {
      await virsh('domjobabort', name).catch(() => undefined);
      await virsh('destroy', name).catch(() => undefined);
    }
    await Promise.all(images.map((image) => rm(image.path, { force: true })));
    await rm(workDir, { recursive: true, force: true });
  };
  try {
    for (const image of images) await run('qemu-img', ['create', '-q', '-f', image.format, image.path, '64M']);
    await virsh('create', await writeTemp(domainDefinition(name, images)));
    started = true;
  } catch (error) {
    await dispose();
    throw error;
  }
  return {
    name,
    workDir,
    domainXml: () => virsh('dumpxml', name),
    createCheckpoint: async (xml, options = {}) => {
      await virsh('checkpoint-create', name, await writeTemp(xml), ...(options.redefine === true ? ['--redefine'] : []));
    },
    checkpointXml: (checkpoint, options = {}) => virsh('checkpoint-dumpxml', name, checkpoint, ...(options.size === true ? ['--size'] : [])),
    backupBegin: async (backupXml, checkpointXml) => {
      const files = [await writeTemp(backupXml)];
      if (checkpointXml !== undefined) files.push(await writeTemp(checkpointXml));
      await virsh('backup-begin', name, ...files);
    },
    backupXml: () => virsh('backup-dumpxml', name),
    abortJob: async () => {
      await virsh('domjobabort', name);
    },
    waitForJobEnd: async (timeoutMs = 30_000) => {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        const info = await virsh('domjobinfo', name);
        if (/Job type:\s+None/.test(info)) return;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      throw new Error(`job on ${name} still running after ${timeoutMs} ms`);
    },
    guestWrite: async (diskIndex, offset, length) => {
      const command = `qemu-io -d /machine/peripheral/virtio-disk${diskIndex}/virtio-backend "write -P 0xab ${offset} ${length}"`;
      await virsh('qemu-monitor-command', name, '--hmp', command);
    },
    dispose,
  };
}
