import { DOMImplementation, DOMParser, XMLSerializer, type Document, type Element, type Node } from '@xmldom/xmldom';
import { hasCharactersOutsideXml, unreadableMarkup } from './characters.js';
import { XmlParseError, quote } from './errors.js';

/**
 * Content of an element that this version does not model: unknown attributes
 * and unknown child elements (each as a standalone XML string). Parsers fill it
 * in and builders write it back, so XML from a newer libvirt survives
 * parse -> build. Unknown elements are written after the modeled ones, which
 * libvirt's schemas allow (they interleave children).
 */
export interface XmlExtra {
  attributes?: Record<string, string>;
  elements?: string[];
}

const ELEMENT_NODE = 1;
const TEXT_NODE = 3;
const CDATA_SECTION_NODE = 4;

/**
 * XML 1.0 line-end handling only: xmldom's default follows XML 1.1 and would
 * turn U+0085, U+2028 and U+2029 into newlines, silently changing names.
 */
function normalizeXml10LineEndings(source: string): string {
  return source.replace(/\r\n?/g, '\n');
}

/** Error messages quote the document; a hostile one must not make them huge. */
const LONGEST_PARSER_MESSAGE = 300;

/**
 * Runs xmldom on a string that passed our own character checks, turning
 * every complaint into an `XmlParseError`.
 *
 * Warnings are well-formedness violations (unquoted attributes and the
 * like); a lenient read would guess at the meaning. The one exception is
 * xmldom's note that the text holds U+FFFD: that is a valid character (a
 * description may hold it, and the builders write it), so refusing it would
 * make our own output unreadable.
 */
function parseWithXmldom(source: string, locator: boolean): Document {
  // A byte order mark is not part of the document (Buffer#toString keeps it; TextDecoder would not).
  const xml = source.startsWith('\uFEFF') ? source.slice(1) : source;
  if (hasCharactersOutsideXml(xml)) {
    throw new XmlParseError('', 'not well-formed XML: contains characters XML does not allow (binary data?)');
  }
  const unreadable = unreadableMarkup(xml);
  if (unreadable !== undefined) throw new XmlParseError('', unreadable);
  try {
    return new DOMParser({
      locator,
      normalizeLineEndings: normalizeXml10LineEndings,
      onError: (level, message) => {
        if (level === 'warning' && message.includes('Unicode replacement character')) return;
        throw new Error(`${level}: ${message}`);
      },
    }).parseFromString(xml, 'text/xml');
  } catch (error) {
    throw new XmlParseError('', `not well-formed XML: ${cleanParserMessage(error)}`, { cause: error });
  }
}

/** Parses a whole document and returns its root, which must be named `rootName`. */
export function parseDocument(xml: unknown, rootName: string): Element {
  if (typeof xml !== 'string') {
    throw new XmlParseError('', `expected an XML string, got ${describeType(xml)}`);
  }
  const root = parseWithXmldom(xml, true).documentElement;
  if (root === null || root === undefined) {
    throw new XmlParseError('', 'not well-formed XML: missing root element');
  }
  if (root.nodeName !== rootName) {
    throw new XmlParseError('', `expected root element <${rootName}>, got <${shorten(root.nodeName)}>`);
  }
  return root;
}

function cleanParserMessage(error: unknown): string {
  const raw = error instanceof Error ? error.message : String(error);
  const firstLine = raw.split('\n')[0] ?? raw;
  const reported = /^Reporting \w+ "(.*)" caused /s.exec(firstLine);
  const message = (reported?.[1] ?? firstLine).trim();
  return shorten(message.replace(/^\[xmldom \w+\]\s*/, '').replace(/^(warning|error|fatalError): /, ''));
}

function shorten(text: string): string {
  return text.length <= LONGEST_PARSER_MESSAGE ? text : `${text.slice(0, LONGEST_PARSER_MESSAGE)}... (${text.length} characters)`;
}

function describeType(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value;
}

/** Serialises one element on its own, so it can be kept as a string. */
export function serializeElement(element: Element): string {
  return serializeFaithfully(element);
}

/**
 * xmldom writes a carriage return in text as is, and every XML reader turns
 * it into a line feed, so a value read from `&#13;` would change on its way
 * back. After parsing, a raw CR can only come from such text (attributes get
 * `&#13;` from xmldom; comments and CDATA had theirs normalised), so writing
 * each one as a reference is exact.
 */
function serializeFaithfully(node: Node): string {
  return new XMLSerializer().serializeToString(node).replace(/\r/g, '&#13;');
}

export function childElements(element: Element): Element[] {
  const result: Element[] = [];
  for (let node = element.firstChild; node !== null; node = node.nextSibling) {
    if (node.nodeType === ELEMENT_NODE) result.push(node as Element);
  }
  return result;
}

export function textContent(element: Element): string {
  let text = '';
  for (let node = element.firstChild; node !== null; node = node.nextSibling) {
    if (node.nodeType === TEXT_NODE || node.nodeType === CDATA_SECTION_NODE) text += node.nodeValue ?? '';
  }
  return text;
}

/**
 * Reads one element, recording which attributes and children were used so
 * that everything else can be handed back as `XmlExtra`. Errors carry the
 * path in the typed result (`disks[1].size`), not an XPath.
 */
export class ElementReader {
  readonly element: Element;
  readonly path: string;
  private readonly usedAttributes = new Set<string>();
  private readonly usedChildren = new Set<Element>();

  constructor(element: Element, path: string) {
    this.element = element;
    this.path = path;
  }

  fieldPath(field: string): string {
    return this.path === '' ? field : `${this.path}.${field}`;
  }

  attribute(name: string): string | undefined {
    this.usedAttributes.add(name);
    return this.element.hasAttribute(name) ? (this.element.getAttribute(name) ?? '') : undefined;
  }

  enumAttribute<T extends string>(name: string, allowed: readonly T[]): T | undefined {
    const value = this.attribute(name);
    if (value === undefined) return undefined;
    if (!(allowed as readonly string[]).includes(value)) {
      throw new XmlParseError(this.fieldPath(name), `unknown value ${quote(value)}, expected ${allowed.map((v) => `'${v}'`).join(' or ')}`);
    }
    return value as T;
  }

  unsignedAttribute(name: string): number | undefined {
    const value = this.attribute(name);
    return value === undefined ? undefined : parseUnsigned(value, this.fieldPath(name));
  }

  /** First child element with this name; later duplicates stay unconsumed and so are kept. */
  child(name: string): Element | undefined {
    for (const child of childElements(this.element)) {
      if (child.nodeName === name && !this.usedChildren.has(child)) {
        this.usedChildren.add(child);
        return child;
      }
    }
    return undefined;
  }

  children(name: string): Element[] {
    const found = childElements(this.element).filter((child) => child.nodeName === name);
    for (const child of found) this.usedChildren.add(child);
    return found;
  }

  childText(name: string): string | undefined {
    const child = this.child(name);
    return child === undefined ? undefined : textContent(child);
  }

  unsignedChildText(name: string): number | undefined {
    const text = this.childText(name);
    return text === undefined ? undefined : parseUnsigned(text.trim(), this.fieldPath(name));
  }

  /** Everything not read so far, or undefined when there is nothing. */
  extra(): XmlExtra | undefined {
    const attributes: Record<string, string> = {};
    let hasAttributes = false;
    const attributeList = this.element.attributes;
    for (let i = 0; i < attributeList.length; i++) {
      const attribute = attributeList.item(i);
      if (attribute === null || this.usedAttributes.has(attribute.name)) continue;
      // Defined, not assigned: an attribute named __proto__ would otherwise set the prototype and vanish.
      Object.defineProperty(attributes, attribute.name, { value: attribute.value, enumerable: true, writable: true, configurable: true });
      hasAttributes = true;
    }
    const elements = childElements(this.element)
      .filter((child) => !this.usedChildren.has(child))
      .map(serializeElement);
    if (!hasAttributes && elements.length === 0) return undefined;
    const extra: XmlExtra = {};
    if (hasAttributes) extra.attributes = attributes;
    if (elements.length > 0) extra.elements = elements;
    return extra;
  }
}

function parseUnsigned(text: string, path: string): number {
  if (!/^[0-9]+$/.test(text)) {
    throw new XmlParseError(path, `must be a non-negative integer, got ${quote(text)}`);
  }
  const value = Number(text);
  if (!Number.isSafeInteger(value)) {
    throw new XmlParseError(path, `${quote(text)} is larger than ${Number.MAX_SAFE_INTEGER}, which this library cannot represent exactly`);
  }
  return value;
}

/** Attribute values in the order they should appear; undefined ones are skipped. */
export type AttributeList = ReadonlyArray<readonly [string, string | number | undefined]>;

/**
 * Builds a document through the DOM so that escaping is the XML library's job.
 * Elements imported whole (kept extras, an embedded domain) are remembered so
 * that indentation never changes their text.
 */
export class DocumentWriter {
  readonly document: Document;
  readonly root: Element;
  /** How deep each element we created sits; imported (verbatim) elements are not in it. */
  private readonly depths = new Map<Element, number>();
  /** Elements given indented children, which need a closing line break before their end tag. */
  private readonly indented: Element[] = [];
  private closed = false;

  constructor(rootName: string) {
    this.document = new DOMImplementation().createDocument(null, rootName, null);
    const root = this.document.documentElement;
    if (root === null) throw new Error(`cannot create <${rootName}>`);
    this.root = root;
    this.depths.set(root, 0);
  }

  setAttributes(element: Element, attributes: AttributeList): void {
    for (const [name, value] of attributes) {
      if (value !== undefined) element.setAttribute(name, String(value));
    }
  }

  element(parent: Element, name: string, attributes: AttributeList = []): Element {
    const element = this.document.createElement(name);
    this.setAttributes(element, attributes);
    this.appendIndented(parent, element);
    this.depths.set(element, this.depthOf(parent) + 1);
    return element;
  }

  textElement(parent: Element, name: string, text: string | number | undefined): Element | undefined {
    if (text === undefined) return undefined;
    const element = this.element(parent, name);
    element.appendChild(this.document.createTextNode(String(text)));
    return element;
  }

  /** Imports a standalone XML element string, kept exactly as given (nothing inside it is indented). */
  importElement(parent: Element, xml: string): Element {
    const imported = this.document.importNode(parseStandaloneElement(xml), true) as Element;
    this.appendIndented(parent, imported);
    return imported;
  }

  writeExtra(element: Element, extra: XmlExtra | undefined): void {
    if (extra === undefined) return;
    for (const [name, value] of Object.entries(extra.attributes ?? {})) {
      element.setAttribute(name, value);
    }
    for (const xml of extra.elements ?? []) this.importElement(element, xml);
  }

  /** The document as text, indented two spaces per level like libvirt's own output. */
  serialize(): string {
    if (!this.closed) {
      for (const element of this.indented) element.appendChild(this.document.createTextNode(`\n${INDENT.repeat(this.depthOf(element))}`));
      this.closed = true;
    }
    return `${serializeFaithfully(this.root)}\n`;
  }

  /**
   * Indents as elements are added: inserting line breaks afterwards costs
   * xmldom time proportional to the number of siblings per insertion, which
   * made large documents quadratic.
   */
  private appendIndented(parent: Element, child: Node): void {
    if (this.closed) throw new Error('the document was already serialised');
    if (parent.lastChild === null) this.indented.push(parent);
    parent.appendChild(this.document.createTextNode(`\n${INDENT.repeat(this.depthOf(parent) + 1)}`));
    parent.appendChild(child);
  }

  private depthOf(element: Element): number {
    const depth = this.depths.get(element);
    if (depth === undefined) throw new Error(`<${element.nodeName}> was not created by this writer`);
    return depth;
  }
}

const INDENT = '  ';

/** Parses a string that must hold exactly one element (an `XmlExtra` entry, an embedded domain). */
export function parseStandaloneElement(xml: string): Element {
  const root = parseWithXmldom(xml, false).documentElement;
  if (root === null || root === undefined) throw new XmlParseError('', 'not well-formed XML: missing root element');
  return root;
}
