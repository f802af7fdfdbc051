import test from 'ava';
import {
  buildBackupXml,
  buildCheckpointXml,
  validateBackupSpec,
  validateCheckpointSpec,
  backupSpecIssues,
  parseDomainXml,
  XmlValidationError,
  type BackupSpec,
} from '../../src/xml/index.js';

function messageOf(action: () => unknown): string | undefined {
  try {
    action();
  } catch (error) {
    if (error instanceof XmlValidationError) return error.message;
    throw error;
  }
  return undefined;
}

const pull = (disks: unknown[]): BackupSpec => ({ mode: 'pull', server: { transport: 'unix', socket: '/run/backup.sock' }, disks }) as BackupSpec;

test('scratch in push mode', (t) => {
  const spec = {
    mode: 'push',
    disks: [
      { name: 'vda', type: 'file' },
      { name: 'vdb', type: 'file', scratch: { file: '/s' } },
    ],
  } as unknown as BackupSpec;
  t.is(
    messageOf(() => buildBackupXml(spec)),
    'disks[1].scratch: only allowed in pull mode',
  );
});

test('target in pull mode', (t) => {
  t.is(
    messageOf(() => buildBackupXml(pull([{ name: 'vda', type: 'file', target: { file: '/t' } }]))),
    'disks[0].target: only allowed in push mode',
  );
});

test('relative socket', (t) => {
  const spec: BackupSpec = { mode: 'pull', server: { transport: 'unix', socket: 'backup.sock' } };
  t.is(
    messageOf(() => buildBackupXml(spec)),
    'server.socket: must be an absolute path',
  );
});

test('checkpoint name pattern', (t) => {
  t.is(
    messageOf(() => buildCheckpointXml({ name: '../escape' })),
    'name: must match [a-zA-Z0-9_-][a-zA-Z0-9_.-]*',
  );
  t.is(
    messageOf(() => buildCheckpointXml({ name: '.hidden' })),
    'name: must match [a-zA-Z0-9_-][a-zA-Z0-9_.-]*',
  );
  t.is(
    messageOf(() => buildCheckpointXml({ name: '' })),
    'name: must not be empty',
  );
  t.is(
    messageOf(() => buildCheckpointXml({ name: 'nightly-2024.01_a' })),
    undefined,
  );
});

test('push disk type on libvirt 9.0 and 11', (t) => {
  const spec: BackupSpec = { mode: 'push', disks: [{ name: 'vda' }] };
  t.is(
    messageOf(() => buildBackupXml(spec)),
    "disks[0].type: push disks need type 'file' or 'block' on libvirt < 11",
  );
  t.is(
    messageOf(() => buildBackupXml(spec, { libvirtVersion: 10_010_000 })),
    "disks[0].type: push disks need type 'file' or 'block' on libvirt < 11",
  );
  t.is(
    messageOf(() => buildBackupXml(spec, { libvirtVersion: 11_000_000 })),
    undefined,
  );
  t.is(
    messageOf(() => buildBackupXml({ mode: 'push', disks: [{ name: 'vda', backup: 'no' }] })),
    undefined,
    "backup='no' needs no type",
  );
});

test('fd transport needs libvirt 11.3', (t) => {
  const spec: BackupSpec = { mode: 'pull', server: { transport: 'fd', fdgroup: 'nbd' } };
  t.is(
    messageOf(() => buildBackupXml(spec)),
    "server.transport: 'fd' needs libvirt >= 11.3",
  );
  t.is(
    messageOf(() => buildBackupXml(spec, { libvirtVersion: 11_003_000 })),
    undefined,
  );
});

test('numbers must be non-negative integers', (t) => {
  t.is(
    messageOf(() => buildCheckpointXml({ creationTime: -1 })),
    'creationTime: must be a non-negative integer',
  );
  t.is(
    messageOf(() => buildCheckpointXml({ creationTime: 1.5 })),
    'creationTime: must be a non-negative integer',
  );
  t.is(
    messageOf(() => buildCheckpointXml({ creationTime: Number.NaN })),
    'creationTime: must be a non-negative integer',
  );
  t.is(
    messageOf(() => buildCheckpointXml({ disks: [{ name: 'vda', size: '12' as unknown as number }] })),
    'disks[0].size: must be a non-negative integer',
  );
  t.is(
    messageOf(() => buildBackupXml({ mode: 'pull', server: { name: 'localhost', port: -1 } })),
    'server.port: must be a non-negative integer',
  );
});

test('unknown keys are rejected', (t) => {
  t.is(
    messageOf(() => buildCheckpointXml({ nmae: 'x' } as never)),
    'nmae: unknown key',
  );
  t.is(
    messageOf(() => buildBackupXml(pull([{ name: 'vda', exportName: 'x' }]))),
    'disks[0].exportName: unknown key',
  );
  t.is(
    messageOf(() => buildBackupXml({ mode: 'pull', server: { transport: 'unix', socket: '/s', name: 'h' } } as never)),
    "server.name: not allowed with transport 'unix'",
  );
});

test('exportname and exportbitmap only in pull mode', (t) => {
  const spec = { mode: 'push', disks: [{ name: 'vda', type: 'file', exportbitmap: 'b' }] } as unknown as BackupSpec;
  t.is(
    messageOf(() => buildBackupXml(spec)),
    'disks[0].exportbitmap: only allowed in pull mode',
  );
});

test('mode must be push or pull', (t) => {
  t.is(
    messageOf(() => buildBackupXml({ mode: 'pulll' } as never)),
    "mode: must be 'push' or 'pull'",
  );
  t.is(
    messageOf(() => buildBackupXml(null as never)),
    'must be an object',
  );
});

test('a disk may not be listed twice', (t) => {
  t.is(
    messageOf(() => buildCheckpointXml({ disks: [{ name: 'vda' }, { name: 'vda', checkpoint: 'no' }] })),
    "disks[1].name: 'vda' is listed twice",
  );
});

test('text that XML cannot carry is refused before building', (t) => {
  t.is(
    messageOf(() => buildCheckpointXml({ description: 'a\u0000b' })),
    'description: must not contain control characters or unpaired surrogates (XML cannot carry them)',
  );
  t.is(
    messageOf(() => buildCheckpointXml({ description: 'a\r\nb' })),
    'description: must not contain carriage returns (XML reads them back as line feeds)',
  );
  t.is(
    messageOf(() => buildCheckpointXml({ description: 'a\nb & <c> "d" \u00e9\u65e5' })),
    undefined,
  );
});

test('the embedded domain must agree with its xml', (t) => {
  const xml = '<domain type="kvm"><name>vm1</name><devices/></domain>';
  t.is(
    messageOf(() => buildCheckpointXml({ domain: { name: 'vm2', disks: [], xml } })),
    'domain.name: does not match what domain.xml says; change the xml, the typed fields follow it',
  );
  t.regex(
    messageOf(() => buildCheckpointXml({ domain: { disks: [], xml: '<notdomain/>' } })) ?? '',
    /^domain\.xml: not a domain definition: expected root element <domain>/,
  );
  t.is(
    messageOf(() => buildCheckpointXml({ domain: { type: 'kvm', name: 'vm1', disks: [], xml } })),
    undefined,
  );
});

test('kept content cannot shadow modeled fields', (t) => {
  t.is(
    messageOf(() => buildCheckpointXml({ disks: [{ name: 'vda', extra: { attributes: { bitmap: 'x' } } }] })),
    'disks[0].extra.attributes.bitmap: is a modeled attribute; set the typed field instead',
  );
  t.is(
    messageOf(() => buildCheckpointXml({ extra: { elements: ['<name>x</name>'] } })),
    'extra.elements[0]: <name> is modeled; set the typed field instead',
  );
  t.regex(messageOf(() => buildCheckpointXml({ extra: { elements: ['<open>'] } })) ?? '', /^extra\.elements\[0\]: not well-formed XML/);
});

test('the error carries path, rule and every issue', (t) => {
  const spec = pull([
    { name: 'disk0', type: 'block' },
    { name: 'vdb', type: 'file', scratch: { file: 'relative' }, driver: { type: 'raw' } },
  ]);
  const error = t.throws(() => validateBackupSpec(spec), { instanceOf: XmlValidationError });
  t.is(error?.path, 'disks[0].name');
  t.regex(error?.rule ?? '', /^must match a disk target dev like vda/);
  t.deepEqual(
    error?.issues.map((issue) => issue.path),
    ['disks[0].name', 'disks[0].scratch', 'disks[1].scratch.file', 'disks[1].driver.type'],
  );
  t.regex(error?.message ?? '', /\(and 3 more\)$/);
  t.deepEqual(backupSpecIssues(spec).length, 4);
});

test('validate functions accept valid specs silently', (t) => {
  t.notThrows(() => validateCheckpointSpec({ name: 'c1', disks: [{ name: 'vda' }, { name: '/var/lib/img & <x>.qcow2', checkpoint: 'no' }] }));
  t.notThrows(() => validateBackupSpec(pull([{ name: 'vda', type: 'file', scratch: { file: '/tmp/s.qcow2' }, driver: { type: 'qcow2' } }])));
});

test('libvirtVersion itself is checked', (t) => {
  t.is(
    messageOf(() => buildCheckpointXml({}, { libvirtVersion: -3 })),
    'options.libvirtVersion: must be a non-negative integer such as 9000000',
  );
});

const INDEX_REFUSAL = 'output-only (backupGetXMLDesc reports it), libvirt refuses it in virDomainBackupBegin input';

test('a backup disk index is output-only: refused whatever its value, naming the disk', (t) => {
  for (const index of [0, 3, -2, 2 ** 32]) {
    t.is(
      messageOf(() =>
        buildBackupXml(
          pull([
            { name: 'vda', type: 'file' },
            { name: 'vdb', type: 'file', index },
          ]),
        ),
      ),
      `disks[1].index: ${INDEX_REFUSAL}`,
    );
  }
  t.is(
    messageOf(() => buildBackupXml({ mode: 'push', disks: [{ name: 'vda', type: 'file', index: 1 }] }, { libvirtVersion: 12_000_000 })),
    `disks[0].index: ${INDEX_REFUSAL}`,
    'refused for every libvirt version',
  );
  t.is(
    messageOf(() => buildBackupXml(pull([{ name: 'vda', type: 'file', extra: { attributes: { index: '3' } } }]))),
    `disks[0].extra.attributes.index: ${INDEX_REFUSAL}`,
    'and cannot come back through extra',
  );
});

test("libvirt's status and internal XML cannot come back through extra, at any version", (t) => {
  const statusRule = "output-only (libvirt's status XML), libvirt refuses it in virDomainBackupBegin input";
  for (const libvirtVersion of [9_000_000, 12_000_000]) {
    const options = { libvirtVersion };
    t.is(
      messageOf(() => buildBackupXml(pull([{ name: 'vda', type: 'file', extra: { attributes: { state: 'running' } } }]), options)),
      `disks[0].extra.attributes.state: ${statusRule}`,
    );
    t.is(
      messageOf(() => buildBackupXml({ mode: 'push', extra: { elements: ['<privateData><objects/></privateData>'] } }, options)),
      `extra.elements[0]: <privateData> is ${statusRule}`,
    );
    t.is(
      messageOf(() => buildBackupXml(pull([{ name: 'vda', type: 'file', scratch: { file: '/s', extra: { elements: ['<privateData/>'] } } }]), options)),
      `disks[0].scratch.extra.elements[0]: <privateData> is ${statusRule}`,
    );
    t.is(
      messageOf(() => buildCheckpointXml({ name: 'c1', extra: { elements: ['<active>1</active>'] } }, options)),
      "extra.elements[0]: <active> is output-only (libvirt's internal checkpoint metadata), libvirt refuses it in virDomainCheckpointCreateXML input",
    );
  }
});

test('unmodeled content goes only to a libvirt newer than every schema the validators model', (t) => {
  const spec: BackupSpec = { mode: 'push', disks: [{ name: 'vda', type: 'file', extra: { attributes: { future: 'x' } } }] };
  t.is(
    messageOf(() => buildBackupXml(spec)),
    "disks[0].extra.attributes.future: attribute 'future' is not in libvirt 9.0's schema for virDomainBackupBegin input (unmodeled content is passed on only to libvirt newer than 11.3)",
  );
  t.regex(messageOf(() => buildBackupXml(spec, { libvirtVersion: 11_003_000 })) ?? '', /not in libvirt 11\.3's schema/);
  t.is(
    messageOf(() => buildBackupXml(spec, { libvirtVersion: 11_004_000 })),
    undefined,
  );
  t.is(
    messageOf(() => buildCheckpointXml({ extra: { elements: ['<future/>'] } }, { libvirtVersion: 9_000_001 })),
    "extra.elements[0]: element <future> is not in libvirt 9.0.1's schema for virDomainCheckpointCreateXML input (unmodeled content is passed on only to libvirt newer than 11.3)",
  );
});

test('a new checkpoint refuses what libvirt sets itself; a redefinition needs it', (t) => {
  const described = {
    name: 'c2',
    creationTime: 1553648510,
    parent: 'c1',
    disks: [{ name: 'vda', checkpoint: 'bitmap' as const, bitmap: 'c2', size: 1048576 }],
    domain: { disks: [], xml: '<domain type="kvm"><name>vm1</name><devices/></domain>' },
  };
  const created = t.throws(() => buildCheckpointXml(described, { redefine: false }), { instanceOf: XmlValidationError });
  t.deepEqual(created?.issues, [
    { path: 'creationTime', rule: 'set by libvirt when it creates the checkpoint; give it only with REDEFINE (libvirt ignores it otherwise)' },
    { path: 'parent', rule: 'set by libvirt when it creates the checkpoint; give it only with REDEFINE (libvirt ignores it otherwise)' },
    { path: 'domain', rule: 'set by libvirt when it creates the checkpoint; give it only with REDEFINE (libvirt ignores it otherwise)' },
    { path: 'disks[0].size', rule: 'output-only (getXMLDesc with the SIZE flag reports it); libvirt ignores it on creation' },
  ]);
  t.is(
    messageOf(() => buildCheckpointXml(described, { redefine: true })),
    undefined,
    'redefinition feeds back what libvirt printed',
  );
  t.is(
    messageOf(() => buildCheckpointXml(described)),
    undefined,
    'without a purpose only the schema rules apply',
  );
  t.is(
    messageOf(() => buildCheckpointXml({ name: 'c1', description: 'd', disks: [{ name: 'vda' }] }, { redefine: false })),
    undefined,
  );

  const redefined = t.throws(() => buildCheckpointXml({ description: 'no name' }, { redefine: true }), { instanceOf: XmlValidationError });
  t.deepEqual(
    redefined?.issues.map((issue) => issue.path),
    ['name', 'creationTime'],
  );
  t.is(
    messageOf(() => buildCheckpointXml({ name: 'c1' }, { redefine: 'yes' as never })),
    'options.redefine: must be true or false',
  );
});

test('an embedded domain with text where libvirt allows none is refused (the documentation abbreviates with "...")', (t) => {
  const withText = (devices: string) => ({
    name: 'c1',
    creationTime: 1,
    domain: parseDomainXml(`<domain type="kvm"><name>vm1</name><devices>${devices}</devices></domain>`),
  });
  t.is(
    messageOf(() => buildCheckpointXml(withText('<disk/> ... '), { redefine: true })),
    "domain.xml: text '...' beside child elements in domain > devices: libvirt's domain schema has no room for it",
  );
  t.is(
    messageOf(() => buildCheckpointXml(withText('<disk/>\n  <disk/>'), { redefine: true })),
    undefined,
    'indentation is not text',
  );
  t.is(
    messageOf(() => buildCheckpointXml(withText(''), { redefine: true })),
    undefined,
  );
  const metadata = '<domain type="kvm"><name>vm1</name><metadata><app:x xmlns:app="urn:app">free <b>form</b> text</app:x></metadata><devices/></domain>';
  t.is(
    messageOf(() => buildCheckpointXml({ name: 'c1', creationTime: 1, domain: parseDomainXml(metadata) })),
    undefined,
    '<metadata> holds anything',
  );
});
