import type { Element } from '@xmldom/xmldom';
import { parseDocument } from './node.js';

/** What `virConnectGetDomainCapabilities` says about backups. */
export interface DomainCapabilitiesSummary {
  /** `<domain>` (kvm, qemu, ...). */
  domainType?: string;
  /** `<features><backup supported=...>`; undefined when the element is absent (older libvirt). */
  backupSupported?: boolean;
}

/** What `<domainCapabilities>` says about backups, checkpoints and the emulator. */
export function parseDomainCapabilities(xml: string): DomainCapabilitiesSummary {
  const root = parseDocument(xml, 'domainCapabilities');
  const summary: DomainCapabilitiesSummary = {};
  for (const child of Array.from(root.childNodes)) {
    if (child.nodeName === 'domain') summary.domainType = child.textContent?.trim() ?? '';
    if (child.nodeName !== 'features') continue;
    for (const feature of Array.from(child.childNodes)) {
      if (feature.nodeName === 'backup') {
        summary.backupSupported = (feature as Element).getAttribute('supported') === 'yes';
      }
    }
  }
  return summary;
}
