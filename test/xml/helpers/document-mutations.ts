import fc from 'fast-check';
import { DOMParser, XMLSerializer, type Document, type Element, type Node } from '@xmldom/xmldom';

/**
 * Ways to damage a libvirt document: field values replaced through the DOM
 * (so the document stays well-formed and the typed layer is what gets
 * tested), elements renamed, dropped, copied or moved, and raw text
 * spliced, cut or truncated (so the XML layer gets tested).
 */

const ELEMENT_NODE = 1;
const TEXT_NODE = 3;

/** Values that break typed readers: numbers in odd spellings, enum near-misses, names JavaScript treats specially. */
export const NASTY_VALUES: readonly string[] = [
  '',
  ' ',
  '-1',
  '0',
  '1e3',
  ' 7',
  '7 ',
  '0x10',
  '+5',
  '9007199254740991',
  '9007199254740992',
  '18446744073709551615',
  '99999999999999999999999999',
  'NaN',
  'Infinity',
  'yes',
  'no',
  'push',
  'pull',
  'PULL',
  'tcp',
  'unix',
  'fd',
  'rdma',
  'file',
  'block',
  'bitmap',
  'qcow2',
  'luks',
  'passphrase',
  'vda',
  '/abs/path',
  '..',
  'a/b',
  '.hidden',
  'é日🙂',
  '\uFFFD',
  '&<>"\'',
  ']]>',
  '\t\n ',
  '__proto__',
  'constructor',
  'toString',
  'x'.repeat(10_000),
];

/** Names for renamed or inserted elements and attributes: modeled ones in the wrong place, and JavaScript's specials. */
export const NASTY_NAMES: readonly string[] = [
  'disk',
  'disks',
  'domain',
  'name',
  'target',
  'scratch',
  'server',
  'driver',
  'encryption',
  'secret',
  'seclabel',
  'backingStore',
  'parent',
  'privateData',
  'active',
  'state',
  'index',
  '__proto__',
  'constructor',
  'hasOwnProperty',
  'unknownThing',
];

function parse(xml: string): Document {
  return new DOMParser({ onError: () => undefined }).parseFromString(xml, 'text/xml');
}

function serialize(document: Document): string {
  return new XMLSerializer().serializeToString(document);
}

function elementsOf(document: Document): Element[] {
  const found: Element[] = [];
  const pending: Node[] = document.documentElement === null ? [] : [document.documentElement];
  for (let node = pending.pop(); node !== undefined; node = pending.pop()) {
    if (node.nodeType !== ELEMENT_NODE) continue;
    found.push(node as Element);
    for (let child = node.lastChild; child !== null; child = child.previousSibling) pending.push(child);
  }
  return found;
}

type Field = { element: Element; attribute: string } | { element: Element; text: true };

/** Every attribute, and the text of every element holding text, in document order. */
function fieldsOf(document: Document): Field[] {
  const fields: Field[] = [];
  for (const element of elementsOf(document)) {
    for (let index = 0; index < element.attributes.length; index++) {
      fields.push({ element, attribute: element.attributes.item(index)!.name });
    }
    let hasText = false;
    for (let child = element.firstChild; child !== null; child = child.nextSibling)
      hasText ||= child.nodeType === TEXT_NODE && (child.nodeValue ?? '').trim() !== '';
    if (hasText) fields.push({ element, text: true });
  }
  return fields;
}

export function fieldCount(xml: string): number {
  return fieldsOf(parse(xml)).length;
}

/** The document with field number `index` (modulo the number of fields) set to `value`, escaped by the DOM. */
export function withFieldValue(xml: string, index: number, value: string): string {
  const document = parse(xml);
  const fields = fieldsOf(document);
  if (fields.length === 0) return xml;
  const field = fields[index % fields.length]!;
  if ('attribute' in field) {
    field.element.setAttribute(field.attribute, value);
  } else {
    for (let child = field.element.firstChild; child !== null;) {
      const next = child.nextSibling;
      if (child.nodeType === TEXT_NODE) field.element.removeChild(child);
      child = next;
    }
    field.element.appendChild(document.createTextNode(value));
  }
  return serialize(document);
}

export type StructuralChange =
  | { kind: 'rename'; target: number; name: string }
  | { kind: 'remove'; target: number }
  | { kind: 'duplicate'; target: number }
  | { kind: 'move'; target: number; to: number }
  | { kind: 'insert'; target: number; name: string }
  | { kind: 'dropAttribute'; target: number; attribute: number }
  | { kind: 'addAttribute'; target: number; name: string; value: string }
  | { kind: 'nest'; target: number; depth: number; name: string };

/** Changes to a document's tree; `deepest` bounds how many levels a nesting change adds. */
export const structuralChange = (deepest: number): fc.Arbitrary<StructuralChange> =>
  fc.oneof(
    fc.record({ kind: fc.constant('rename' as const), target: fc.nat(), name: fc.constantFrom(...NASTY_NAMES) }),
    fc.record({ kind: fc.constant('remove' as const), target: fc.nat() }),
    fc.record({ kind: fc.constant('duplicate' as const), target: fc.nat() }),
    fc.record({ kind: fc.constant('move' as const), target: fc.nat(), to: fc.nat() }),
    fc.record({ kind: fc.constant('insert' as const), target: fc.nat(), name: fc.constantFrom(...NASTY_NAMES) }),
    fc.record({ kind: fc.constant('dropAttribute' as const), target: fc.nat(), attribute: fc.nat() }),
    fc.record({
      kind: fc.constant('addAttribute' as const),
      target: fc.nat(),
      name: fc.constantFrom(...NASTY_NAMES.filter((name) => !name.includes(':'))),
      value: fc.constantFrom(...NASTY_VALUES),
    }),
    fc.record({
      kind: fc.constant('nest' as const),
      target: fc.nat(),
      depth: fc.integer({ min: 1, max: deepest }),
      name: fc.constantFrom('a', 'disk', 'backingStore', 'domain'),
    }),
  );

/** Applies one change through the DOM; the result is well-formed unless a rename made a prefix undeclared. */
export function withStructuralChange(xml: string, change: StructuralChange): string {
  const document = parse(xml);
  const elements = elementsOf(document);
  if (elements.length === 0) return xml;
  const target = elements[change.target % elements.length]!;
  const parent = target.parentNode;
  switch (change.kind) {
    case 'rename': {
      const renamed = document.createElement(change.name);
      for (let index = 0; index < target.attributes.length; index++) {
        const attribute = target.attributes.item(index)!;
        renamed.setAttribute(attribute.name, attribute.value);
      }
      while (target.firstChild !== null) renamed.appendChild(target.firstChild);
      parent?.replaceChild(renamed, target);
      break;
    }
    case 'remove':
      if (parent !== null && parent.nodeType === ELEMENT_NODE) parent.removeChild(target);
      break;
    case 'duplicate':
      if (parent !== null && parent.nodeType === ELEMENT_NODE) parent.insertBefore(target.cloneNode(true), target.nextSibling);
      break;
    case 'move': {
      const destination = elements[change.to % elements.length]!;
      let inside = false;
      for (let node: Node | null = destination; node !== null; node = node.parentNode) inside ||= node === target;
      if (!inside && parent !== null && parent.nodeType === ELEMENT_NODE) destination.appendChild(target);
      break;
    }
    case 'insert':
      target.appendChild(document.createElement(change.name));
      break;
    case 'dropAttribute':
      if (target.attributes.length > 0) target.removeAttribute(target.attributes.item(change.attribute % target.attributes.length)!.name);
      break;
    case 'addAttribute':
      target.setAttribute(change.name, change.value);
      break;
    case 'nest': {
      let innermost: Element = target;
      for (let level = 0; level < change.depth; level++) innermost = innermost.appendChild(document.createElement(change.name)) as Element;
      break;
    }
  }
  return serialize(document);
}

export type TextDamage =
  | { kind: 'splice'; at: number; remove: number; insert: string }
  | { kind: 'truncate'; at: number }
  | { kind: 'repeat'; at: number; length: number; times: number };

/** Raw text damage: junk that includes markup, references and characters XML forbids. */
const junk = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 12 }),
  fc
    .array(
      fc.constantFrom(
        '<',
        '>',
        '</',
        '/>',
        '&',
        '&#',
        '&#x',
        ';',
        '"',
        "'",
        '=',
        '<!--',
        '-->',
        '<![CDATA[',
        ']]>',
        '<?',
        '?>',
        '<!DOCTYPE x>',
        '&amp;',
        '&#0;',
        '&#x110000;',
        '\r',
        '\uFEFF',
        '\uD800',
      ),
      {
        maxLength: 6,
      },
    )
    .map((parts) => parts.join('')),
);

export const textDamage: fc.Arbitrary<TextDamage> = fc.oneof(
  fc.record({ kind: fc.constant('splice' as const), at: fc.nat(), remove: fc.nat({ max: 40 }), insert: junk }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('repeat' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 40 }), times: fc.integer({ min: 2, max: 2_000 }) }),
);

export function withTextDamage(xml: string, damage: TextDamage): string {
  const at = damage.at % (xml.length + 1);
  switch (damage.kind) {
    case 'splice':
      return xml.slice(0, at) + damage.insert + xml.slice(at + damage.remove);
    case 'truncate':
      return xml.slice(0, at);
    case 'repeat':
      return xml.slice(0, at) + xml.slice(at, at + damage.length).repeat(damage.times) + xml.slice(at + damage.length);
  }
}
