import type { Element } from '@xmldom/xmldom';
import { quote } from './errors.js';
import { ElementReader, parseDocument, serializeElement, textContent } from './node.js';

/** A host of a network disk source (`<source protocol=...><host .../>`). */
export interface DomainDiskHost {
  name?: string;
  port?: number;
  transport?: string;
  socket?: string;
}

/** Where a disk's data lives: one of file, dev, dir, a network protocol + name, or a pool volume. */
export interface DomainDiskSource {
  file?: string;
  dev?: string;
  dir?: string;
  protocol?: string;
  name?: string;
  hosts?: DomainDiskHost[];
  pool?: string;
  volume?: string;
}

/** One image below the active layer, top first. */
export interface DomainBackingStore {
  type?: string;
  format?: string;
  index?: number;
  source?: DomainDiskSource;
}

/** A `<disk>` of a domain, read only as far as backups and checkpoints need it. */
export interface DomainDisk {
  /** `file`, `block`, `network`, `volume`, `dir`, `nvme`, `vhostuser`, ... */
  type?: string;
  /** `disk`, `cdrom`, `floppy` or `lun`; libvirt's default is `disk`. */
  device?: string;
  driver?: { name?: string; type?: string };
  source?: DomainDiskSource;
  target?: { dev?: string; bus?: string };
  /** The backing chain below the active image, top first; empty when there is none or it is unknown. */
  backingStore: DomainBackingStore[];
  readonly: boolean;
  shareable: boolean;
  /**
   * A block copy or active commit running on the disk (live XML only): `job` is `copy` or
   * `active-commit`; `ready` is libvirt's own view, `yes` once it has handled QEMU's
   * ready event, which is what a pivot asks of the job.
   */
  mirror?: { job?: string; ready?: string };
}

/**
 * A domain definition: the parts backups need, typed, plus the whole element
 * as XML so that it can be handed back to libvirt unchanged (checkpoint
 * redefinition needs the domain as it was).
 */
export interface DomainSummary {
  /** The hypervisor type attribute (`kvm`, `qemu`, ...). */
  type?: string;
  name?: string;
  uuid?: string;
  disks: DomainDisk[];
  /** The `<domain>` element, serialised; the typed fields above are derived from it. */
  xml: string;
}

/** Parses a domain XML document (`virsh dumpxml`, `getXMLDesc`). */
export function parseDomainXml(xml: string): DomainSummary {
  return readDomain(parseDocument(xml, 'domain'), '');
}

export function readDomain(element: Element, path: string): DomainSummary {
  const reader = new ElementReader(element, path);
  const type = reader.attribute('type');
  const name = reader.childText('name');
  const uuid = reader.childText('uuid');
  const devices = reader.child('devices');
  const disks =
    devices === undefined
      ? []
      : new ElementReader(devices, reader.fieldPath('devices')).children('disk').map((disk, index) => readDisk(disk, `${reader.fieldPath('disks')}[${index}]`));
  return {
    ...(type === undefined ? {} : { type }),
    ...(name === undefined ? {} : { name }),
    ...(uuid === undefined ? {} : { uuid: uuid.trim() }),
    disks,
    xml: serializeElement(element),
  };
}

function readDisk(element: Element, path: string): DomainDisk {
  const reader = new ElementReader(element, path);
  const disk: DomainDisk = { backingStore: [], readonly: false, shareable: false };
  assign(disk, 'type', reader.attribute('type'));
  assign(disk, 'device', reader.attribute('device'));
  assign(disk, 'driver', childAttributes(reader, 'driver', ['name', 'type']));
  const source = reader.child('source');
  if (source !== undefined) disk.source = readSource(source, reader.fieldPath('source'));
  assign(disk, 'target', childAttributes(reader, 'target', ['dev', 'bus']));
  disk.readonly = reader.child('readonly') !== undefined;
  disk.shareable = reader.child('shareable') !== undefined;
  disk.backingStore = readBackingChain(reader.child('backingStore'), reader.fieldPath('backingStore'));
  assign(disk, 'mirror', childAttributes(reader, 'mirror', ['job', 'ready']));
  return disk;
}

/** A child element's attributes among `keys`, those present; undefined without the child. */
function childAttributes<K extends string>(reader: ElementReader, name: string, keys: readonly K[]): { [key in K]?: string } | undefined {
  const child = reader.child(name);
  if (child === undefined) return undefined;
  const childReader = new ElementReader(child, reader.fieldPath(name));
  const attributes: { [key in K]?: string } = {};
  for (const key of keys) assign(attributes, key, childReader.attribute(key));
  return attributes;
}

function readSource(element: Element, path: string): DomainDiskSource {
  const reader = new ElementReader(element, path);
  const source: DomainDiskSource = {};
  for (const key of ['file', 'dev', 'dir', 'protocol', 'name', 'pool', 'volume'] as const) {
    assign(source, key, reader.attribute(key));
  }
  const hosts = reader.children('host');
  if (hosts.length > 0) {
    source.hosts = hosts.map((host, index) => {
      const hostReader = new ElementReader(host, `${reader.fieldPath('hosts')}[${index}]`);
      const result: DomainDiskHost = {};
      assign(result, 'name', hostReader.attribute('name'));
      assign(result, 'port', hostReader.unsignedAttribute('port'));
      assign(result, 'transport', hostReader.attribute('transport'));
      assign(result, 'socket', hostReader.attribute('socket'));
      return result;
    });
  }
  return source;
}

/**
 * libvirt nests the chain (`<backingStore><backingStore>...`) and ends it
 * with an empty `<backingStore/>`; a flat list is easier to walk.
 */
function readBackingChain(first: Element | undefined, path: string): DomainBackingStore[] {
  const chain: DomainBackingStore[] = [];
  let current = first;
  const seen = new Set<Element>();
  while (current !== undefined && !seen.has(current)) {
    seen.add(current);
    const reader = new ElementReader(current, `${path}[${chain.length}]`);
    const layer: DomainBackingStore = {};
    assign(layer, 'type', reader.attribute('type'));
    assign(layer, 'index', reader.unsignedAttribute('index'));
    const format = reader.child('format');
    if (format !== undefined) assign(layer, 'format', format.getAttribute('type') ?? undefined);
    const source = reader.child('source');
    if (source !== undefined) layer.source = readSource(source, reader.fieldPath('source'));
    if (Object.keys(layer).length === 0 && textContent(current).trim() === '') break;
    chain.push(layer);
    current = reader.child('backingStore');
  }
  return chain;
}

function assign<T extends object, K extends keyof T>(target: T, key: K, value: T[K] | undefined): void {
  if (value !== undefined) target[key] = value;
}

/** Whether a disk can carry a persistent dirty bitmap, and if not, why. */
export type BitmapSupport = { supported: true } | { supported: false; reason: string };

/** Protocols QEMU can only read, so a qcow2 image there cannot store a new bitmap. */
const READ_ONLY_PROTOCOLS = new Set(['http', 'https', 'ftp', 'ftps', 'tftp']);

/** Disk types whose data never passes through QEMU's qcow2 driver. */
const TYPES_WITHOUT_QCOW2 = new Set(['dir', 'vhostuser', 'nvme']);

/** What to assume about which disks can take a dirty bitmap. */
export interface BitmapSupportOptions {
  /**
   * Whether qcow2 images on network storage (NBD, RBD, iSCSI, Gluster, ...)
   * count as able to hold bitmaps. QEMU can store them there, but not every
   * deployment allows it, so it is off unless asked for.
   */
  allowNetwork?: boolean;
}

/** Whether one domain disk can take a checkpoint bitmap: it must be a writable qcow2 disk. */
export function diskBitmapSupport(disk: DomainDisk, options: BitmapSupportOptions = {}): BitmapSupport {
  const device = disk.device ?? 'disk';
  if (device !== 'disk' && device !== 'lun') return { supported: false, reason: `device ${quote(device)} holds no guest data to track` };
  if (disk.target?.dev === undefined) return { supported: false, reason: 'disk has no target dev to name it by' };
  if (disk.readonly) return { supported: false, reason: 'disk is read-only' };
  if (disk.source === undefined && disk.type !== 'network') return { supported: false, reason: 'disk has no source' };
  const type = disk.type ?? 'file';
  if (TYPES_WITHOUT_QCOW2.has(type)) return { supported: false, reason: `disk type ${quote(type)} cannot carry qcow2 bitmaps` };
  if (type === 'network') {
    const protocol = disk.source?.protocol ?? 'unknown';
    if (READ_ONLY_PROTOCOLS.has(protocol)) return { supported: false, reason: `network protocol ${quote(protocol)} is read-only` };
    if (options.allowNetwork !== true) return { supported: false, reason: `network disks (protocol ${quote(protocol)}) are not enabled for bitmaps` };
  }
  const format = disk.driver?.type;
  if (format !== 'qcow2') {
    return {
      supported: false,
      reason: format === undefined ? 'disk format is not declared (libvirt assumes raw)' : `format ${quote(format)} cannot store bitmaps; qcow2 is required`,
    };
  }
  return { supported: true };
}

/** A domain's disks, by whether a checkpoint can give them a bitmap. */
export interface CheckpointDiskClassification {
  /** Disks that can take a bitmap. */
  bitmap: DomainDisk[];
  /** Disks that cannot, each with the reason. */
  excluded: Array<{ disk: DomainDisk; reason: string }>;
}

/** Splits a domain's disks into those that can take a checkpoint bitmap and those that cannot. */
export function classifyCheckpointDisks(domain: DomainSummary | string, options: BitmapSupportOptions = {}): CheckpointDiskClassification {
  const summary = typeof domain === 'string' ? parseDomainXml(domain) : domain;
  const result: CheckpointDiskClassification = { bitmap: [], excluded: [] };
  for (const disk of summary.disks) {
    const support = diskBitmapSupport(disk, options);
    if (support.supported) result.bitmap.push(disk);
    else result.excluded.push({ disk, reason: support.reason });
  }
  return result;
}
