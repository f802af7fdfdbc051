import test from 'ava';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseBackupXml, parseCheckpointXml, parseDomainXml, XmlParseError } from '../../src/xml/index.js';

const fixture = readFileSync(fileURLToPath(new URL('./fixtures/backup/tests-pull-encrypted.xml', import.meta.url)), 'utf8');
const parsers = { parseBackupXml, parseCheckpointXml, parseDomainXml };

function parseError(action: () => unknown): XmlParseError {
  try {
    action();
  } catch (error) {
    if (error instanceof XmlParseError) return error;
    throw new Error(`expected XmlParseError, got ${String(error)}`);
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
  t.is(
    parseError(() => parseCheckpointXml('<domaincheckpoint><creationTime>99999999999999999999</creationTime></domaincheckpoint>')).path,
    'creationTime',
  );
  t.is(parseError(() => parseBackupXml('<domainbackup mode="sideways"/>')).message, "mode: unknown value 'sideways', expected 'push' or 'pull'");
  t.is(parseError(() => parseBackupXml('<domainbackup mode="pull"/>')).message, 'server: required in pull mode');
  t.is(parseError(() => parseBackupXml('<domainbackup><disks><disk type="file"/></disks></domainbackup>')).message, 'disks[0].name: missing');
  t.is(
    parseError(() => parseBackupXml('<domainbackup mode="pull"><server transport="unix"/></domainbackup>')).message,
    'server.socket: missing',
  );
});

test('any corruption of a valid document gives a result or an XmlParseError, never anything else', (t) => {
  fc.assert(
    fc.property(
      fc.nat({ max: fixture.length }),
      fc.nat({ max: 40 }),
      fc.string({ unit: 'binary', maxLength: 8 }),
      (start, length, junk) => {
        const corrupted = fixture.slice(0, start) + junk + fixture.slice(start + length);
        for (const parse of Object.values(parsers)) {
          try {
            const result = parse(corrupted);
            t.is(typeof result, 'object');
          } catch (error) {
            if (!(error instanceof XmlParseError)) throw error;
          }
        }
      },
    ),
    { numRuns: 1000 },
  );
});

test('arbitrary strings never crash the parsers', (t) => {
  let parsed = 0;
  fc.assert(
    fc.property(fc.string({ unit: 'binary', maxLength: 200 }), (input) => {
      parsed++;
      for (const parse of Object.values(parsers)) {
        try {
          parse(input);
        } catch (error) {
          if (!(error instanceof XmlParseError)) throw error;
        }
      }
    }),
    { numRuns: 1000 },
  );
  t.is(parsed, 1000);
});
