// A domain that runs straight from a backup: the saved definition with its own
// identity (name, UUID, MAC addresses, NVRAM, display ports) and each backed-up disk
// on a file, typically a thin overlay whose backing chain is the backup itself, so
// it can run beside the domain it was backed up from.
import type { Document, Element } from '@xmldom/xmldom';
import { XmlValidationError, quote, type ValidationIssue } from './errors.js';
import { repointDisk, setChildText } from './disk-rewrite.js';
import { childElements, parseDocument, serializeElement } from './node.js';

/** Where one disk of the recovered domain lives. */
export interface RecoveredDiskFile {
  /** The disk's target (`vda`). */
  target: string;
  /** Absolute path of the image on the hypervisor host. */
  file: string;
  format: 'qcow2' | 'raw';
}

/** How to derive a recovered domain from the original's XML: its name, UUID and disk files. */
export interface RecoveredDomainOptions {
  name: string;
  /** The new domain's UUID (canonical form); the caller picks it so it can record it first. */
  uuid: string;
  disks: readonly RecoveredDiskFile[];
  /** Where the domain runs from, kept in its `<metadata>` for whoever moves its storage later. */
  origin?: RecoveryOrigin;
}

/** The backup point a recovered domain runs from. */
export interface RecoveryOrigin {
  /** The set directory, absolute. */
  set: string;
  backupId: string;
  /** Each disk's overlay, as a path on the hypervisor host. */
  overlays: Array<{ target: string; path: string }>;
}

/** The namespace of our element in a domain's `<metadata>`. */
export const RECOVERY_METADATA_NAMESPACE = 'https://libvirt-backup.invalid/xmlns/recovered/1';

/** A recovered domain's XML, and the disks left out of it. */
export interface RecoveredDomainXml {
  xml: string;
  /** Targets of writable disks dropped because no file was given for them (they would share the original's storage). */
  droppedDisks: string[];
  /** True when an `<nvram>` path was dropped, for libvirt to make the new domain its own. */
  droppedNvram: boolean;
}

const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function optionIssues(options: RecoveredDomainOptions): ValidationIssue[] {
  const issues: ValidationIssue[] = [];
  if (typeof options.name !== 'string' || options.name.trim() === '' || options.name.includes('/'))
    issues.push({ path: 'name', rule: `must be a non-empty domain name without '/', got ${quote(String(options.name))}` });
  if (typeof options.uuid !== 'string' || !UUID_PATTERN.test(options.uuid))
    issues.push({ path: 'uuid', rule: `must be a lowercase UUID, got ${quote(String(options.uuid))}` });
  options.disks.forEach((disk, index) => {
    if (typeof disk.file !== 'string' || !disk.file.startsWith('/'))
      issues.push({ path: `disks[${index}].file`, rule: `must be an absolute path, got ${quote(String(disk.file))}` });
    if (disk.format !== 'qcow2' && disk.format !== 'raw') issues.push({ path: `disks[${index}].format`, rule: `must be 'qcow2' or 'raw'` });
  });
  return issues;
}

/**
 * Rewrites `domainXml` for a recovered copy: `name` and `uuid` set, every interface's
 * `<mac>` removed and fixed display ports freed (libvirt picks new ones), the
 * `<nvram>` path dropped, each given disk turned into a `<disk type='file'>` on its
 * file with no backing chain in the XML (QEMU reads it from the image), other
 * writable disks dropped, CD-ROMs and floppies kept.
 */
export function recoveredDomainXml(domainXml: string, options: RecoveredDomainOptions): RecoveredDomainXml {
  const issues = optionIssues(options);
  const root = parseDocument(domainXml, 'domain');
  const document = root.ownerDocument as Document;
  const devices = childElements(root).find((element) => element.nodeName === 'devices');
  const diskElements = devices ? childElements(devices).filter((element) => element.nodeName === 'disk') : [];
  const targets = new Set(diskElements.map(diskTarget));
  options.disks.forEach((disk, index) => {
    if (!targets.has(disk.target)) issues.push({ path: `disks[${index}].target`, rule: `the domain has no disk ${quote(String(disk.target))}` });
  });
  if (issues.length > 0) throw new XmlValidationError(issues);

  root.removeAttribute('id');
  setChildText(document, root, 'name', options.name);
  for (const uuid of childElements(root).filter((element) => element.nodeName === 'uuid')) root.removeChild(uuid);
  const uuid = document.createElement('uuid');
  uuid.appendChild(document.createTextNode(options.uuid));
  root.insertBefore(uuid, childElements(root).find((element) => element.nodeName === 'name')!.nextSibling);
  let droppedNvram = false;
  for (const os of childElements(root).filter((element) => element.nodeName === 'os')) {
    for (const nvram of childElements(os).filter((element) => element.nodeName === 'nvram')) {
      os.removeChild(nvram);
      droppedNvram = true;
    }
  }
  const byTarget = new Map(options.disks.map((disk) => [disk.target, disk]));
  const droppedDisks: string[] = [];
  for (const element of devices ? childElements(devices) : []) {
    if (element.nodeName === 'interface') {
      for (const mac of childElements(element).filter((child) => child.nodeName === 'mac')) element.removeChild(mac);
    } else if (element.nodeName === 'graphics') {
      freeDisplayPorts(element);
    } else if (element.nodeName === 'disk') {
      const recovered = byTarget.get(diskTarget(element));
      if (recovered !== undefined) repointDisk(document, element, 'file', recovered.format, { file: recovered.file });
      else if (['disk', 'lun'].includes(element.getAttribute('device') ?? 'disk') && !isReadOnly(element)) {
        droppedDisks.push(diskTarget(element));
        devices!.removeChild(element);
      }
    }
  }
  if (options.origin !== undefined) writeOrigin(document, root, options.origin);
  return { xml: `${serializeElement(root)}\n`, droppedDisks, droppedNvram };
}

/** Our `<metadata>` element, replacing an older one (a domain recovered from a recovered domain's backup). */
function writeOrigin(document: Document, root: Element, origin: RecoveryOrigin): void {
  let metadata = childElements(root).find((element) => element.nodeName === 'metadata');
  if (metadata === undefined) {
    metadata = document.createElement('metadata');
    root.appendChild(metadata);
  }
  for (const old of childElements(metadata).filter((element) => element.namespaceURI === RECOVERY_METADATA_NAMESPACE)) metadata.removeChild(old);
  const recovered = document.createElementNS(RECOVERY_METADATA_NAMESPACE, 'lvb:recovered');
  recovered.setAttribute('set', origin.set);
  recovered.setAttribute('backup', origin.backupId);
  for (const overlay of origin.overlays) {
    const element = document.createElementNS(RECOVERY_METADATA_NAMESPACE, 'lvb:overlay');
    element.setAttribute('target', overlay.target);
    element.setAttribute('path', overlay.path);
    recovered.appendChild(element);
  }
  metadata.appendChild(recovered);
}

/** Where a domain made by `recoveredDomainXml` runs from, or null for any other domain. */
export function parseRecoveryOrigin(domainXml: string): RecoveryOrigin | null {
  const root = parseDocument(domainXml, 'domain');
  const metadata = childElements(root).find((element) => element.nodeName === 'metadata');
  const recovered =
    metadata && childElements(metadata).find((element) => element.namespaceURI === RECOVERY_METADATA_NAMESPACE && element.localName === 'recovered');
  if (recovered === undefined) return null;
  const overlays = childElements(recovered)
    .filter((element) => element.localName === 'overlay')
    .map((element) => ({ target: element.getAttribute('target') ?? '', path: element.getAttribute('path') ?? '' }));
  return { set: recovered.getAttribute('set') ?? '', backupId: recovered.getAttribute('backup') ?? '', overlays };
}

function diskTarget(disk: Element): string {
  return (
    childElements(disk)
      .find((child) => child.nodeName === 'target')
      ?.getAttribute('dev') ?? ''
  );
}

function isReadOnly(disk: Element): boolean {
  return childElements(disk).some((child) => child.nodeName === 'readonly');
}

/** A fixed port would clash with the original domain's display. */
function freeDisplayPorts(graphics: Element): void {
  for (const attribute of ['port', 'tlsPort', 'websocket']) graphics.removeAttribute(attribute);
  if (graphics.hasAttribute('autoport')) graphics.setAttribute('autoport', 'yes');
}

/** How a running domain can be reached: its displays, network interfaces and serial consoles. */
export interface DomainAccess {
  graphics: Array<{ type: string; port?: number; listen?: string }>;
  interfaces: Array<{ type: string; mac?: string; source?: string }>;
  /** Whether it has a serial console (`virsh console NAME`). */
  console: boolean;
}

/** Reads a (live) domain definition for `DomainAccess`. */
export function parseDomainAccess(domainXml: string): DomainAccess {
  const root = parseDocument(domainXml, 'domain');
  const devices = childElements(root).find((element) => element.nodeName === 'devices');
  const access: DomainAccess = { graphics: [], interfaces: [], console: false };
  for (const element of devices ? childElements(devices) : []) {
    if (element.nodeName === 'graphics') {
      const port = Number(element.getAttribute('port') ?? '');
      const listen =
        element.getAttribute('listen') ??
        childElements(element)
          .find((child) => child.nodeName === 'listen')
          ?.getAttribute('address') ??
        undefined;
      access.graphics.push({
        type: element.getAttribute('type') ?? 'unknown',
        ...(Number.isInteger(port) && port > 0 ? { port } : {}),
        ...(listen ? { listen } : {}),
      });
    } else if (element.nodeName === 'interface') {
      const children = childElements(element);
      const mac = children.find((child) => child.nodeName === 'mac')?.getAttribute('address') ?? undefined;
      const sourceElement = children.find((child) => child.nodeName === 'source');
      const source = sourceElement?.getAttribute('network') ?? sourceElement?.getAttribute('bridge') ?? sourceElement?.getAttribute('dev') ?? undefined;
      access.interfaces.push({ type: element.getAttribute('type') ?? 'unknown', ...(mac ? { mac } : {}), ...(source ? { source } : {}) });
    } else if (element.nodeName === 'console' || element.nodeName === 'serial') {
      access.console = true;
    }
  }
  return access;
}
