/**
 * What characters and markup a libvirt document may hold before it reaches
 * the XML library: checks that do not depend on how (or whether) the library
 * enforces them, because a gap there would silently change a value.
 */

/**
 * Characters XML 1.0 cannot carry even as character references. A string
 * holding one can never round-trip, so both directions refuse it.
 */
const CHARACTERS_OUTSIDE_XML = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/u;

export function hasCharactersOutsideXml(value: string): boolean {
  return CHARACTERS_OUTSIDE_XML.test(value);
}

/** XML 1.0's `Char` production, for a code point written as a character reference. */
function isXmlCharacter(codePoint: number): boolean {
  return (
    codePoint === 0x9 ||
    codePoint === 0xa ||
    codePoint === 0xd ||
    (codePoint >= 0x20 && codePoint <= 0xd7ff) ||
    (codePoint >= 0xe000 && codePoint <= 0xfffd) ||
    (codePoint >= 0x10000 && codePoint <= 0x10ffff)
  );
}

const CHARACTER_REFERENCE = /&#(x[0-9a-fA-F]+|[0-9]+);/g;
/** No valid code point needs more digits than this (0x10FFFF, 1114111). */
const LONGEST_VALID_REFERENCE = { hex: 6, decimal: 7 };

/**
 * Why `source` cannot be read faithfully (a message for `XmlParseError`), or undefined.
 *
 * - A character reference must name a character XML allows. xmldom decodes
 *   `&#0;` to U+0000 and wraps references beyond U+10FFFF around into other
 *   characters, which would hand back a value that was never in the document.
 * - Declarations (`<!DOCTYPE`, `<!ENTITY`) are refused outright. libvirt never
 *   writes them, and they are how entity expansion ("billion laughs") and
 *   external entities reach a parser; refusing them here keeps that true
 *   whatever a later xmldom does with a DTD.
 *
 * Comments, CDATA sections and processing instructions are skipped: a `&#0;`
 * there is plain text. The scan is one pass with no backtracking.
 */
export function unreadableMarkup(source: string): string | undefined {
  const references = new CharacterReferenceScanner(source);
  let position = 0;
  let textStart = 0;
  while (position < source.length) {
    const open = source.indexOf('<', position);
    const textEnd = open < 0 ? source.length : open;
    const badReference = references.firstBadIn(textStart, textEnd);
    if (badReference !== undefined) return badReference;
    if (open < 0) return undefined;
    const skipTo = endOfUnparsedSection(source, open);
    if (skipTo === 'declaration') {
      const name = /^<!([A-Za-z]*)/.exec(source.slice(open, open + 20))?.[1] ?? '';
      return `<!${name}> declarations are refused: libvirt never writes them, and entities are never expanded`;
    }
    // A tag's attribute values hold references too, so its text is scanned with what follows it.
    position = skipTo ?? open + 1;
    textStart = skipTo ?? open;
  }
  return undefined;
}

/** Where a comment, CDATA section or processing instruction starting at `open` ends; 'declaration' for `<!...>` markup. */
function endOfUnparsedSection(source: string, open: number): number | 'declaration' | undefined {
  const sections: ReadonlyArray<readonly [string, string]> = [
    ['<!--', '-->'],
    ['<![CDATA[', ']]>'],
    ['<?', '?>'],
  ];
  for (const [start, end] of sections) {
    if (source.startsWith(start, open)) {
      const close = source.indexOf(end, open + start.length);
      // Unterminated: the XML parser reports it; nothing after it is markup.
      return close < 0 ? source.length : close + end.length;
    }
  }
  if (source.startsWith('<!', open)) return 'declaration';
  return undefined;
}

/** Finds bad references region by region, remembering the next `&#` so the whole scan stays linear. */
class CharacterReferenceScanner {
  private readonly source: string;
  private nextReference = -1;

  constructor(source: string) {
    this.source = source;
  }

  firstBadIn(start: number, end: number): string | undefined {
    if (this.nextReference !== Number.POSITIVE_INFINITY && this.nextReference < start) {
      const found = this.source.indexOf('&#', start);
      this.nextReference = found < 0 ? Number.POSITIVE_INFINITY : found;
    }
    if (this.nextReference >= end) return undefined;
    const span = this.source.slice(this.nextReference, end);
    CHARACTER_REFERENCE.lastIndex = 0;
    for (let match = CHARACTER_REFERENCE.exec(span); match !== null; match = CHARACTER_REFERENCE.exec(span)) {
      const digits = match[1]!;
      const hex = digits.startsWith('x');
      const significant = (hex ? digits.slice(1) : digits).replace(/^0+(?=.)/, '');
      const tooLong = significant.length > (hex ? LONGEST_VALID_REFERENCE.hex : LONGEST_VALID_REFERENCE.decimal);
      if (tooLong || !isXmlCharacter(Number.parseInt(significant, hex ? 16 : 10))) {
        const shown = match[0].length > 24 ? `${match[0].slice(0, 20)}...;` : match[0];
        return `not well-formed XML: character reference ${shown} names a character XML does not allow`;
      }
    }
    this.nextReference = end;
    return undefined;
  }
}
