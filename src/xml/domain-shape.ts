import type { Element, Node } from '@xmldom/xmldom';

const ELEMENT_NODE = 1;
const TEXT_NODE = 3;
const CDATA_SECTION_NODE = 4;

/** Text placed where libvirt's domain schema has no room for it, and the element holding it. */
export interface StrayText {
  /** Element names from the root down, `domain > devices`. */
  readonly where: string;
  readonly text: string;
}

/**
 * Finds text beside child elements (mixed content). No element of libvirt's
 * domain schema allows it, except the free-form content under `<metadata>`;
 * libvirt never writes it, so it means a hand-edited or abbreviated domain
 * (the documentation's "...") that libvirt would refuse.
 *
 * Walks with an explicit stack: embedded domains come from documents of any
 * depth, and recursion would overflow on a hostile one.
 */
export function findStrayText(root: Element): StrayText | undefined {
  const pending: Element[] = [root];
  for (let element = pending.pop(); element !== undefined; element = pending.pop()) {
    if (element.nodeName === 'metadata') continue;
    let text = '';
    const children: Element[] = [];
    for (let node: Node | null = element.firstChild; node !== null; node = node.nextSibling) {
      if (node.nodeType === ELEMENT_NODE) children.push(node as Element);
      else if (node.nodeType === TEXT_NODE || node.nodeType === CDATA_SECTION_NODE) text += node.nodeValue ?? '';
    }
    if (children.length === 0) continue;
    const stray = text.trim();
    if (stray !== '') return { where: pathFrom(root, element), text: stray.length > 40 ? `${stray.slice(0, 40)}...` : stray };
    for (let index = children.length - 1; index >= 0; index--) pending.push(children[index]!);
  }
  return undefined;
}

/** Built only once something is found, so a deep document costs no path per element. */
function pathFrom(root: Element, element: Element): string {
  const names: string[] = [];
  for (let node: Node | null = element; node !== null; node = node === root ? null : node.parentNode) names.push(node.nodeName);
  const shown = names.length > 6 ? [...names.slice(-3), '...', ...names.slice(0, 2)] : names;
  return shown.reverse().join(' > ');
}
