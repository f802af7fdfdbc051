import test, { type ExecutionContext } from 'ava';
import fc from 'fast-check';
import { readFileSync, readdirSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import {
  buildBackupXml,
  buildCheckpointXml,
  NEWEST_MODELED_LIBVIRT_VERSION,
  parseBackupXml,
  parseCheckpointXml,
  parseDomainXml,
  XmlParseError,
  XmlValidationError,
} from '../../src/xml/index.js';
import { writeBackupXml } from '../../src/xml/backup.js';
import { writeCheckpointXml } from '../../src/xml/checkpoint.js';
import { backupSpecWithIndex, checkpointSpec, embeddedDomain, extra } from './helpers/arbitraries.js';
import { fieldCount, NASTY_VALUES, structuralChange, textDamage, withFieldValue, withStructuralChange, withTextDamage } from './helpers/document-mutations.js';
import { fuzzRuns, ParserJudge } from './helpers/parser-judge.js';

/**
 * The parsers against hostile documents: every case must end in an
 * `XmlParseError` or in a result that is what the document says, within a
 * bounded time and without growing beyond its input. `FUZZ_RUNS=n` runs each
 * property about n times (the CI default is sized for two shared cores).
 */

/** `FUZZ_RUNS` set: also the exhaustive sweeps and the largest inputs. */
const FULL_RUN = process.env['FUZZ_RUNS'] !== undefined;

const fixtureDir = fileURLToPath(new URL('./fixtures/', import.meta.url));
const FIXTURES = ['backup', 'checkpoint'].flatMap((kind) =>
  readdirSync(`${fixtureDir}${kind}`)
    .filter((name) => name.endsWith('.xml'))
    .sort()
    .map((name) => readFileSync(`${fixtureDir}${kind}/${name}`, 'utf8')),
);
const DOMAIN_WITH_CHAIN = `<domain type='kvm'><name>vm</name><uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid><devices>
  <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/img/top.qcow2' index='3'/>
    <backingStore type='file' index='2'><format type='qcow2'/><source file='/img/base.qcow2'/><backingStore/></backingStore>
    <target dev='vda' bus='virtio'/></disk>
  <disk type='network' device='disk'><driver name='qemu' type='qcow2'/><source protocol='nbd' name='e'><host name='h' port='10809'/></source><target dev='vdb'/><readonly/></disk>
</devices></domain>`;
const CAPABILITIES = `<domainCapabilities><path>/usr/bin/qemu-system-x86_64</path><domain>kvm</domain><features><backup supported='yes'/></features></domainCapabilities>`;
const SEEDS = [...FIXTURES, DOMAIN_WITH_CHAIN, CAPABILITIES];

/** Valid documents of every kind, with output-only fields, kept content and embedded domains. */
const generatedDocument = fc.oneof(
  backupSpecWithIndex.map((spec) => writeBackupXml(spec)),
  fc
    .tuple(checkpointSpec, fc.option(extra, { nil: undefined }))
    .map(([spec, kept]) => writeCheckpointXml(kept === undefined ? spec : { ...spec, extra: kept })),
  embeddedDomain.map((domain) => domain.xml),
);
const seedDocument = fc.oneof(fc.constantFrom(...SEEDS), generatedDocument);

const escaped: string[] = [];
process.on('unhandledRejection', (reason) => escaped.push(String(reason)));
test.after.always('nothing escaped as an unhandled rejection', () => {
  if (escaped.length > 0) throw new Error(`unhandled rejections: ${escaped.join('; ')}`);
});

const totals = { documents: 0, calls: 0 };
function report(t: ExecutionContext, target: string, judge: ParserJudge, startedAt: number): void {
  totals.documents += judge.documents;
  totals.calls += judge.calls;
  const line = judge.summary(target, startedAt);
  t.log(line);
  console.log(line);
}
test.after.always('fuzz totals', () => {
  console.log(`parser fuzz total: ${totals.documents} documents, ${totals.calls} parser calls`);
});

function fuzz(target: string, runs: number, arbitrary: fc.Arbitrary<string>): void {
  test(target, (t) => {
    const judge = new ParserJudge();
    const startedAt = performance.now();
    fc.assert(
      fc.property(arbitrary, (xml) => judge.judge(xml)),
      { numRuns: runs },
    );
    report(t, target, judge, startedAt);
    t.true(judge.documents >= runs);
  });
}

fuzz('arbitrary strings', fuzzRuns(1_500), fc.oneof(fc.string({ unit: 'binary', maxLength: 300 }), fc.string({ unit: 'grapheme', maxLength: 300 })));

const markupSoup = fc
  .array(
    fc.oneof(
      fc.constantFrom('<domainbackup', '<domaincheckpoint', '<domain', '<domainCapabilities', '<disks>', '</disks>', '<disk ', '<server ', '<backingStore>'),
      fc.constantFrom('<', '>', '</', '/>', ' ', '\n', '=', '"', "'", 'name="vda"', 'mode="pull"', 'type="file"', 'size="1"', 'index="7"'),
      fc.constantFrom(
        '&amp;',
        '&lt;',
        '&#65;',
        '&#x1F642;',
        '&#0;',
        '&#xD800;',
        '&bogus;',
        '&',
        '<![CDATA[x]]>',
        '<!--c-->',
        '<?pi x?>',
        '<!DOCTYPE d>',
        '<!ENTITY e "e">',
      ),
      fc.constantFrom('<x:a/>', ' xmlns="urn:x"', ' xmlns:x="urn:x"', ' x:y="1"', ' __proto__="p"', ' constructor="c"'),
      fc.string({ unit: 'grapheme', maxLength: 4 }),
    ),
    { maxLength: 60 },
  )
  .map((parts) => parts.join(''));
fuzz('markup soup', fuzzRuns(1_500), markupSoup);

fuzz(
  'valid documents with raw text damage (splices, cuts, truncations, repeats)',
  fuzzRuns(600),
  fc.tuple(seedDocument, fc.array(textDamage, { minLength: 1, maxLength: 4 })).map(([xml, damages]) => damages.reduce(withTextDamage, xml)),
);

fuzz(
  'valid documents with one field set to a hostile value',
  fuzzRuns(800),
  fc
    .tuple(seedDocument, fc.nat(), fc.oneof(fc.constantFrom(...NASTY_VALUES), fc.string({ unit: 'grapheme', maxLength: 20 })))
    .map(([xml, field, value]) => withFieldValue(xml, field, value)),
);

fuzz(
  'valid documents with elements renamed, dropped, copied, moved, inserted or nested deep',
  // Each case rebuilds its document through the DOM up to three times; the explicit nesting test goes deeper.
  fuzzRuns(300, 0.2),
  fc
    .tuple(seedDocument, fc.array(structuralChange(FULL_RUN ? 5_000 : 2_000), { minLength: 1, maxLength: 3 }))
    .map(([xml, changes]) => changes.reduce(withStructuralChange, xml)),
);

fuzz(
  'invalid UTF-8: random bytes, and valid documents with flipped bytes, decoded as UTF-8 and as Latin-1',
  fuzzRuns(600),
  fc
    .tuple(
      fc.oneof(
        fc.uint8Array({ maxLength: 300 }).map((bytes) => Buffer.from(bytes)),
        fc
          .tuple(fc.constantFrom(...SEEDS), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0x80, max: 0xff })), { minLength: 1, maxLength: 8 }))
          .map(([xml, flips]) => {
            const bytes = Buffer.from(xml);
            for (const [at, value] of flips) bytes[at % bytes.length] = value;
            return bytes;
          }),
      ),
      fc.constantFrom('utf8' as const, 'latin1' as const),
    )
    .map(([bytes, encoding]) => bytes.toString(encoding)),
);

test('every field of every fixture, set to each hostile value', (t) => {
  const judge = new ParserJudge();
  const startedAt = performance.now();
  // CI: every field gets the empty string, __proto__ and one more value in turn; a full run gives it every value.
  const always = ['', '__proto__'];
  let turn = 0;
  for (const xml of SEEDS) {
    const fields = fieldCount(xml);
    for (let field = 0; field < fields; field++) {
      const values = FULL_RUN ? NASTY_VALUES : [...always, NASTY_VALUES[turn++ % NASTY_VALUES.length]!];
      for (const value of values) judge.judge(withFieldValue(xml, field, value));
    }
  }
  report(t, 'every field of every fixture, set to each hostile value', judge, startedAt);
  t.true(judge.results > 0 && judge.typedErrors > 0, 'both outcomes occur');
});

test('10,000 levels of nesting anywhere (100,000 in a full run): no stack overflow, bounded time', (t) => {
  const judge = new ParserJudge();
  const startedAt = performance.now();
  const nest = (depth: number, name = 'a') => `${`<${name}>`.repeat(depth)}${`</${name}>`.repeat(depth)}`;
  for (const depth of FULL_RUN ? [10_000, 100_000] : [10_000]) {
    judge.judge(`<domainbackup>${nest(depth)}</domainbackup>`);
    judge.judge(`<domainbackup><disks><disk name="vda" type="file"><target file="/t">${nest(depth)}</target></disk></disks></domainbackup>`);
    judge.judge(`<domaincheckpoint><domain><devices><disk><source file="/x">${nest(depth)}</source></disk></devices></domain></domaincheckpoint>`);
    judge.judge(
      `<domain><devices><disk>${'<backingStore type="file"><source file="/b"/>'.repeat(depth)}${'</backingStore>'.repeat(depth)}</disk></devices></domain>`,
    );
    judge.judge(`<domaincheckpoint>${nest(depth, 'domain')}</domaincheckpoint>`);
    judge.judge(`<domain>${nest(depth)}`);
  }
  const chain = parseDomainXml(
    `<domain><devices><disk>${'<backingStore type="file"><source file="/b"/>'.repeat(10_000)}${'</backingStore>'.repeat(10_000)}</disk></devices></domain>`,
  );
  t.is(chain.disks[0]?.backingStore.length, 10_000, 'a 10,000-image backing chain is read whole');

  // The builders walk and import kept content and embedded domains too.
  const deepExtra = `<future>${'<a>'.repeat(9_999)}<a/>${'</a>'.repeat(9_999)}</future>`;
  const newer = { libvirtVersion: NEWEST_MODELED_LIBVIRT_VERSION + 1_000_000 };
  t.deepEqual(parseBackupXml(buildBackupXml({ mode: 'push', extra: { elements: [deepExtra] } }, newer)).extra, { elements: [deepExtra] });
  const deepDomain = parseDomainXml(`<domain type="kvm"><name>vm</name><metadata>${nest(10_000)}</metadata><devices>${nest(10_000, 'x')}</devices></domain>`);
  const built = buildCheckpointXml({ name: 'c1', creationTime: 1, domain: deepDomain }, { redefine: true });
  t.is(parseCheckpointXml(built).domain?.xml, deepDomain.xml);
  report(t, 'deep nesting', judge, startedAt);
});

test('huge attribute values and text: linear time, nothing amplified', (t) => {
  const judge = new ParserJudge();
  const startedAt = performance.now();
  const MiB = FULL_RUN ? 1 << 20 : 1 << 18;
  const many = FULL_RUN ? 20_000 : 4_000;
  const huge = 'x'.repeat(8 * MiB);
  judge.judge(`<domaincheckpoint><disks><disk name="${huge}"/></disks></domaincheckpoint>`);
  judge.judge(`<domaincheckpoint><description>${huge}</description></domaincheckpoint>`);
  judge.judge(`<domainbackup future="${'&amp;'.repeat(MiB)}"/>`);
  judge.judge(`<domainbackup><disks>${'<disk name="vda" type="file"><target file="/x"/></disk>'.repeat(many)}</disks></domainbackup>`);
  judge.judge(`<domaincheckpoint ${Array.from({ length: many }, (_, index) => `a${index}="v"`).join(' ')}/>`);
  judge.judge(`<domaincheckpoint><description>${'&#x1F642;'.repeat(MiB / 4)}</description></domaincheckpoint>`);
  judge.judge(`<domaincheckpoint a="${'<'.repeat(MiB)}"/>`);
  judge.judge(`<domaincheckpoint>${'<!--c-->'.repeat(5 * many)}</domaincheckpoint>`);
  report(t, 'huge values', judge, startedAt);
  t.is(judge.documents, 8);
});

test('entity expansion and external entities: refused at once, nothing fetched', async (t) => {
  const connections: string[] = [];
  const server = createServer((socket) => {
    connections.push(`${socket.remoteAddress}:${socket.remotePort}`);
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}/entity`;
  const judge = new ParserJudge();
  const startedAt = performance.now();
  try {
    const laughs = (levels: number) => {
      const declarations = Array.from({ length: levels }, (_, level) =>
        level === 0 ? '<!ENTITY l0 "lol">' : `<!ENTITY l${level} "${`&l${level - 1};`.repeat(10)}">`,
      ).join('');
      return `<!DOCTYPE lolz [${declarations}]><domaincheckpoint><description>&l${levels - 1};</description></domaincheckpoint>`;
    };
    const attempts = [
      laughs(10),
      laughs(30),
      `<!DOCTYPE d [<!ENTITY x SYSTEM "${url}">]><domaincheckpoint><name>&x;</name></domaincheckpoint>`,
      `<!DOCTYPE d SYSTEM "${url}"><domaincheckpoint/>`,
      `<!DOCTYPE d PUBLIC "-//x//y" "${url}"><domainbackup/>`,
      `<!DOCTYPE d [<!ENTITY % p SYSTEM "${url}"> %p;]><domain/>`,
      `<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><domaincheckpoint><description>&x;</description></domaincheckpoint>`,
      `<?xml version="1.0"?>\n<!-- a comment first -->\n<!DOCTYPE d [<!ENTITY a "&#38;#60;">]><domaincheckpoint><description>&a;</description></domaincheckpoint>`,
      `<domaincheckpoint><description>&x;</description></domaincheckpoint>`,
    ];
    for (const xml of attempts) {
      judge.judge(xml);
      t.throws(() => parseCheckpointXml(xml), { instanceOf: XmlParseError }, xml.slice(0, 60));
    }
    // An escaped reference is text, not a second round of expansion.
    t.is(parseCheckpointXml('<domaincheckpoint><description>&#38;#0;&amp;lol;</description></domaincheckpoint>').description, '&#0;&lol;');
    await new Promise((resolve) => setTimeout(resolve, 200));
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
  t.deepEqual(connections, [], 'no parser fetched anything');
  report(t, 'entities', judge, startedAt);
  t.is(judge.results, 0, 'no entity attempt produced a value');
});

test('what the parsers accept, the builders either take or refuse with a typed error naming a field', (t) => {
  // The other half of the contract: a parsed hostile document handed to a builder never crashes it.
  let built = 0;
  let refused = 0;
  fc.assert(
    fc.property(fc.tuple(seedDocument, fc.nat(), fc.constantFrom(...NASTY_VALUES), fc.boolean()), ([xml, field, value, redefine]) => {
      const damaged = withFieldValue(xml, field, value);
      for (const [parse, build] of [
        [parseBackupXml, (spec: unknown) => buildBackupXml(spec as never)],
        [parseCheckpointXml, (spec: unknown) => buildCheckpointXml(spec as never, { redefine })],
      ] as const) {
        let spec: unknown;
        try {
          spec = parse(damaged);
        } catch (error) {
          if (error instanceof XmlParseError) continue;
          throw error;
        }
        try {
          build(spec);
          built++;
        } catch (error) {
          if (!(error instanceof XmlValidationError) || error.issues.some((issue) => issue.path === '' && issue.rule !== 'must be an object')) throw error;
          refused++;
        }
      }
    }),
    { numRuns: fuzzRuns(400) },
  );
  const line = `parsed documents handed to the builders: ${built} built, ${refused} refused with a named field`;
  t.log(line);
  console.log(line);
  t.true(built > 0 && refused > 0);
});
