// A new domain from a saved definition, for a restore into storage volumes: same
// hardware, its own identity (name, UUID, MAC addresses, NVRAM) and its disks on the
// restored volumes, so it can run beside the domain it was backed up from.
import type { Document, Element } from '@xmldom/xmldom';
import { XmlValidationError, type ValidationIssue } from './errors.js';
import { repointDisk, setChildText } from './disk-rewrite.js';
import { childElements, parseDocument, serializeElement } from './node.js';

/** Where one restored disk now lives. */
export interface RestoredDiskVolume {
  /** The disk's target (`vda`). */
  target: string;
  pool: string;
  volume: string;
  format: 'raw' | 'qcow2';
}

/** How to derive a restored domain from the original's XML: its name and disk files. */
export interface RestoredDomainOptions {
  /** The new domain's name. */
  name: string;
  disks: readonly RestoredDiskVolume[];
}

/** A restored domain's XML, and the disks left out of it. */
export interface RestoredDomainXml {
  xml: string;
  /** Targets of disks dropped because nothing was restored for them (they would share the original's storage). */
  droppedDisks: string[];
  /** True when an `<nvram>` path was dropped, for libvirt to make the new domain its own. */
  droppedNvram: boolean;
}

/**
 * Rewrites `domainXml` for a restored copy: `name` set, `<uuid>` and every interface's
 * `<mac>` removed (libvirt generates new ones), each restored disk turned into
 * `<disk type='volume'>` on its volume with its format and no backing chain, other
 * writable disks dropped, CD-ROMs and floppies kept.
 */
export function restoredDomainXml(domainXml: string, options: RestoredDomainOptions): RestoredDomainXml {
  const issues: ValidationIssue[] = [];
  if (typeof options.name !== 'string' || options.name.trim() === '' || options.name.includes('/')) {
    issues.push({ path: 'name', rule: `must be a non-empty domain name without '/', got '${String(options.name)}'` });
  }
  const byTarget = new Map(options.disks.map((disk) => [disk.target, disk]));
  const root = parseDocument(domainXml, 'domain');
  const document = root.ownerDocument as Document;
  const devices = childElements(root).find((element) => element.nodeName === 'devices');
  const targets = new Set((devices ? childElements(devices).filter((element) => element.nodeName === 'disk') : []).map(diskTarget));
  options.disks.forEach((disk, index) => {
    if (!targets.has(disk.target)) issues.push({ path: `disks[${index}].target`, rule: `the domain has no disk '${disk.target}'` });
  });
  if (issues.length > 0) throw new XmlValidationError(issues);

  root.removeAttribute('id');
  setChildText(document, root, 'name', options.name);
  for (const uuid of childElements(root).filter((element) => element.nodeName === 'uuid')) root.removeChild(uuid);
  let droppedNvram = false;
  for (const os of childElements(root).filter((element) => element.nodeName === 'os')) {
    for (const nvram of childElements(os).filter((element) => element.nodeName === 'nvram')) {
      os.removeChild(nvram);
      droppedNvram = true;
    }
  }
  const droppedDisks: string[] = [];
  for (const element of devices ? childElements(devices) : []) {
    if (element.nodeName === 'interface') {
      for (const mac of childElements(element).filter((child) => child.nodeName === 'mac')) element.removeChild(mac);
    } else if (element.nodeName === 'disk') {
      const restored = byTarget.get(diskTarget(element));
      if (restored !== undefined) repointDisk(document, element, 'volume', restored.format, { pool: restored.pool, volume: restored.volume });
      else if (['disk', 'lun'].includes(element.getAttribute('device') ?? 'disk')) {
        droppedDisks.push(diskTarget(element));
        devices!.removeChild(element);
      }
    }
  }
  return { xml: `${serializeElement(root)}\n`, droppedDisks, droppedNvram };
}

function diskTarget(disk: Element): string {
  return (
    childElements(disk)
      .find((child) => child.nodeName === 'target')
      ?.getAttribute('dev') ?? ''
  );
}
