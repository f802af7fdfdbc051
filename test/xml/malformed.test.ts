import test from 'ava';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { buildCheckpointXml, parseBackupXml, parseCheckpointXml, parseDomainXml, XmlParseError } from '../../src/xml/index.js';
import { writeBackupXml } from '../../src/xml/backup.js';
import { writeCheckpointXml } from '../../src/xml/checkpoint.js';

const fixture = readFileSync(fileURLToPath(new URL('./fixtures/backup/tests-pull-encrypted.xml', import.meta.url)), 'utf8');

function parseError(action: () => unknown): XmlParseError {
  try {
    action();
  } catch (error) {
    if (error instanceof XmlParseError) return error;
    throw new Error(`expected XmlParseError, got ${String(error)}`, { cause: error });
  }
  throw new Error('expected XmlParseError, got a result');
}

test('truncated documents', (t) => {
  t.regex(parseError(() => parseBackupXml(fixture.slice(0, 200))).message, /^not well-formed XML: /);
  t.regex(parseError(() => parseCheckpointXml('<domaincheckpoint><name>c1</name>')).message, /^not well-formed XML: unclosed xml tag/);
  t.regex(parseError(() => parseBackupXml('<domainbackup mode="pull"><server transport="unix" socket="/s')).message, /^not well-formed XML/);
});

test('wrong root element', (t) => {
  t.is(parseError(() => parseBackupXml('<domaincheckpoint/>')).message, 'expected root element <domainbackup>, got <domaincheckpoint>');
  t.is(parseError(() => parseCheckpointXml(fixture)).message, 'expected root element <domaincheckpoint>, got <domainbackup>');
  t.is(parseError(() => parseDomainXml('<domainbackup/>')).message, 'expected root element <domain>, got <domainbackup>');
});

test('binary junk and non-strings', (t) => {
  t.regex(parseError(() => parseBackupXml('\u0000\u0001\u00ff\u0002')).message, /^not well-formed XML: contains characters XML does not allow/);
  t.regex(parseError(() => parseBackupXml(Buffer.from([0x89, 0x50, 0x4e, 0x47]).toString('latin1'))).message, /^not well-formed XML/);
  t.is(parseError(() => parseBackupXml('')).message, 'not well-formed XML: missing root element');
  t.is(parseError(() => parseBackupXml('just text')).message, 'not well-formed XML: missing root element');
  t.is(parseError(() => parseBackupXml(undefined as never)).message, 'expected an XML string, got undefined');
  t.is(parseError(() => parseBackupXml(Buffer.from('<domainbackup/>') as never)).message, 'expected an XML string, got object');
});

test('well-formedness errors that lenient parsers let through', (t) => {
  t.regex(parseError(() => parseBackupXml('<domainbackup mode=pull/>')).message, /^not well-formed XML/);
  t.regex(parseError(() => parseBackupXml('<domainbackup mode="push" mode="pull"/>')).message, /^not well-formed XML: .*redefined/);
  t.regex(parseError(() => parseBackupXml('<domainbackup/><domainbackup/>')).message, /^not well-formed XML/);
  t.regex(parseError(() => parseBackupXml('<domainbackup>&undefined;</domainbackup>')).message, /^not well-formed XML: entity not found/);
});

test('values our types cannot hold name the field', (t) => {
  const size = parseError(() => parseCheckpointXml('<domaincheckpoint><disks><disk name="vda" size="lots"/></disks></domaincheckpoint>'));
  t.is(size.path, 'disks[0].size');
  t.is(size.message, "disks[0].size: must be a non-negative integer, got 'lots'");
  t.is(parseError(() => parseCheckpointXml('<domaincheckpoint><creationTime>99999999999999999999</creationTime></domaincheckpoint>')).path, 'creationTime');
  t.is(parseError(() => parseBackupXml('<domainbackup mode="sideways"/>')).message, "mode: unknown value 'sideways', expected 'push' or 'pull'");
  t.is(parseError(() => parseBackupXml('<domainbackup mode="pull"/>')).message, 'server: required in pull mode');
  t.is(parseError(() => parseBackupXml('<domainbackup><disks><disk type="file"/></disks></domainbackup>')).message, 'disks[0].name: missing');
  t.is(parseError(() => parseBackupXml('<domainbackup mode="pull"><server transport="unix"/></domainbackup>')).message, 'server.socket: missing');
});

test('character references to characters XML does not allow are refused, not decoded into other characters', (t) => {
  const description = (reference: string) => `<domaincheckpoint><description>${reference}</description></domaincheckpoint>`;
  for (const reference of ['&#0;', '&#x1F;', '&#xD800;', '&#xFFFE;', '&#x110000;', '&#67174400;', '&#99999999999999999999;']) {
    t.regex(
      parseError(() => parseCheckpointXml(description(reference))).message,
      /^not well-formed XML: character reference &#.*; names a character XML does not allow$/,
      reference,
    );
  }
  t.regex(
    parseError(() => parseCheckpointXml('<domaincheckpoint><disks><disk name="vda" bitmap="a&#1;b"/></disks></domaincheckpoint>')).message,
    /&#1;/,
    'in attributes too',
  );
  t.is(parseCheckpointXml(description('&#x10FFFF;&#9;&#65;&#x1F642;&#0000065;')).description, '\u{10FFFF}\tA\u{1F642}A');
  t.is(parseCheckpointXml(description('<![CDATA[&#0;]]>')).description, '&#0;', 'CDATA holds no references');
  t.deepEqual(parseCheckpointXml('<!-- &#0; --><?pi &#0;?><domaincheckpoint/>'), {}, 'nor do comments and processing instructions');
});

test('DOCTYPE and entity declarations are refused: nothing is expanded, nothing is fetched', (t) => {
  const laughs = `<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><domaincheckpoint><name>&lol1;</name></domaincheckpoint>`;
  const external = '<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/hostname">]><domaincheckpoint><name>&xxe;</name></domaincheckpoint>';
  const refused = /^<!DOCTYPE> declarations are refused: libvirt never writes them, and entities are never expanded$/;
  t.regex(parseError(() => parseCheckpointXml(laughs)).message, refused);
  t.regex(parseError(() => parseCheckpointXml(external)).message, refused);
  t.regex(parseError(() => parseBackupXml('<?xml version="1.0"?>\n<!DOCTYPE domainbackup SYSTEM "domainbackup.dtd"><domainbackup/>')).message, refused);
  t.regex(parseError(() => parseDomainXml('<domain><!ENTITY x "y"></domain>')).message, /^<!ENTITY> declarations are refused/);
});

test('U+FFFD is an ordinary character: what the builder writes, the parser reads', (t) => {
  const spec = { name: 'c1', description: 'broken \uFFFD decoding upstream' };
  t.deepEqual(parseCheckpointXml(buildCheckpointXml(spec)), spec);
});

test('invalid UTF-8 ends in a typed error or a value holding U+FFFD', (t) => {
  const bytes = Buffer.from('<domaincheckpoint><description>caf\u00e9</description></domaincheckpoint>');
  const lead = bytes.indexOf(0xc3);
  const truncatedSequence = Buffer.concat([bytes.subarray(0, lead + 1), bytes.subarray(lead + 2)]);
  t.is(parseCheckpointXml(truncatedSequence.toString('utf8')).description, 'caf\uFFFD');
  t.regex(parseError(() => parseCheckpointXml(Buffer.from([0xc3, 0x28, 0x3c, 0x61, 0x2f, 0x3e]).toString('utf8'))).message, /^not well-formed XML/);
  t.regex(
    parseError(() => parseCheckpointXml(Buffer.from([0xff, 0xfe, 0x3c, 0x00, 0x61, 0x00]).toString('utf8'))).message,
    /^not well-formed XML/,
    'UTF-16 read as UTF-8',
  );
});

test('a leading byte order mark is not part of the document', (t) => {
  t.deepEqual(parseCheckpointXml('\uFEFF<domaincheckpoint><name>c1</name></domaincheckpoint>'), { name: 'c1' });
  t.regex(parseError(() => parseCheckpointXml('\uFEFF\uFEFF<domaincheckpoint/>')).message, /^not well-formed XML/, 'only one, and only first');
});

test('error messages stay short whatever the document', (t) => {
  const open = parseError(() => parseCheckpointXml(`<domaincheckpoint>${'<a>'.repeat(100_000)}`));
  t.true(open.message.length < 400, `${open.message.length} characters`);
  t.regex(open.message, /^not well-formed XML: unclosed xml tag\(s\): domaincheckpoint, a, a/);
  const root = parseError(() => parseCheckpointXml(`<${'x'.repeat(100_000)}/>`));
  t.true(root.message.length < 400, `${root.message.length} characters`);
});

// Random and mutated documents: parser-fuzz.test.ts.

test("attributes named like Object.prototype's members are kept like any other", (t) => {
  const spec = parseBackupXml('<domainbackup __proto__="x" constructor="y"><disks><disk name="vda" backup="no" __proto__="z"/></disks></domainbackup>');
  t.deepEqual(Object.entries(spec.extra?.attributes ?? {}), [
    ['__proto__', 'x'],
    ['constructor', 'y'],
  ]);
  t.deepEqual(Object.entries(spec.disks?.[0]?.extra?.attributes ?? {}), [['__proto__', 'z']]);
  t.is(Object.getPrototypeOf(spec.extra?.attributes), Object.prototype, 'and the prototype is untouched');
  t.regex(writeBackupXml(spec), /<domainbackup mode="push" __proto__="x" constructor="y">/);
});

test('values quoted in error messages are cut short', (t) => {
  const long = 'x'.repeat(100_000);
  const mode = parseError(() => parseBackupXml(`<domainbackup mode="${long}"/>`));
  t.is(mode.message, `mode: unknown value '${'x'.repeat(60)}...' (100000 characters), expected 'push' or 'pull'`);
  const size = parseError(() => parseCheckpointXml(`<domaincheckpoint><disks><disk name="vda" size="${'9'.repeat(100_000)}"/></disks></domaincheckpoint>`));
  t.true(size.message.length < 200, size.message.slice(0, 300));
});

test('a carriage return read from &#13; survives being written back, in kept content and embedded domains', (t) => {
  const spec = parseCheckpointXml(
    '<domaincheckpoint><name>c1</name><creationTime>1</creationTime><future>a&#13;b</future><domain type="kvm"><name>vm</name><description>one&#13;two</description><devices/></domain></domaincheckpoint>',
  );
  t.deepEqual(spec.extra, { elements: ['<future>a&#13;b</future>'] });
  t.true(spec.domain?.xml.includes('<description>one&#13;two</description>'));
  t.deepEqual(parseCheckpointXml(writeCheckpointXml(spec)), spec);
  const newer = { libvirtVersion: 12_000_000, redefine: true };
  t.deepEqual(parseCheckpointXml(buildCheckpointXml(spec, newer)), spec);
});

test('building a document with many disks takes linear time', (t) => {
  const disks = Array.from({ length: 20_000 }, (_, index) => ({ name: `vd${index}`, type: 'file' as const, target: { file: `/backups/${index}.qcow2` } }));
  const started = performance.now();
  const xml = writeBackupXml({ mode: 'push', disks });
  const elapsed = performance.now() - started;
  // Quadratic indentation took about 15 s here; linear takes well under one.
  t.true(elapsed < 5_000, `${elapsed.toFixed(0)} ms`);
  t.is(parseBackupXml(xml).disks?.length, 20_000);
});
