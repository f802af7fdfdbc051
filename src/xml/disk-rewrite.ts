// Edits shared by the XML of domains made from a backup (run from a point, restore into a
// pool): a disk pointed at new storage, and an element's text replaced.
import type { Document, Element } from '@xmldom/xmldom';

import { childElements } from './node.js';

/**
 * Points `disk` at new storage of `type` (`file`, `volume`, ...): the old source, backing
 * chain and mirror go, the driver says `format`, and a new `<source>` carries `source`.
 */
export function repointDisk(document: Document, disk: Element, type: string, format: string, source: Record<string, string>): void {
  disk.setAttribute('type', type);
  for (const child of childElements(disk)) {
    if (['source', 'backingStore', 'mirror'].includes(child.nodeName)) disk.removeChild(child);
  }
  let driver = childElements(disk).find((child) => child.nodeName === 'driver');
  if (driver === undefined) {
    driver = document.createElement('driver');
    driver.setAttribute('name', 'qemu');
    disk.insertBefore(driver, disk.firstChild);
  }
  driver.setAttribute('type', format);
  const element = document.createElement('source');
  for (const [name, value] of Object.entries(source)) element.setAttribute(name, value);
  disk.insertBefore(element, driver.nextSibling);
}

/** Replaces the text of `parent`'s child `name`, creating the child first when missing. */
export function setChildText(document: Document, parent: Element, name: string, text: string): void {
  let element = childElements(parent).find((child) => child.nodeName === name);
  if (element === undefined) {
    element = document.createElement(name);
    parent.insertBefore(element, parent.firstChild);
  }
  while (element.firstChild !== null) element.removeChild(element.firstChild);
  element.appendChild(document.createTextNode(text));
}
