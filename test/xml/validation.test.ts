import test from 'ava';
import {
  buildBackupXml,
  buildCheckpointXml,
  validateBackupSpec,
  validateCheckpointSpec,
  backupSpecIssues,
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
  const spec = { mode: 'push', disks: [{ name: 'vda', type: 'file' }, { name: 'vdb', type: 'file', scratch: { file: '/s' } }] } as unknown as BackupSpec;
  t.is(messageOf(() => buildBackupXml(spec)), 'disks[1].scratch: only allowed in pull mode');
});

test('target in pull mode', (t) => {
  t.is(messageOf(() => buildBackupXml(pull([{ name: 'vda', type: 'file', target: { file: '/t' } }]))), 'disks[0].target: only allowed in push mode');
});

test('relative socket', (t) => {
  const spec: BackupSpec = { mode: 'pull', server: { transport: 'unix', socket: 'backup.sock' } };
  t.is(messageOf(() => buildBackupXml(spec)), 'server.socket: must be an absolute path');
});

test('checkpoint name pattern', (t) => {
  t.is(messageOf(() => buildCheckpointXml({ name: '../escape' })), 'name: must match [a-zA-Z0-9_-][a-zA-Z0-9_.-]*');
  t.is(messageOf(() => buildCheckpointXml({ name: '.hidden' })), 'name: must match [a-zA-Z0-9_-][a-zA-Z0-9_.-]*');
  t.is(messageOf(() => buildCheckpointXml({ name: '' })), 'name: must not be empty');
  t.is(messageOf(() => buildCheckpointXml({ name: 'nightly-2024.01_a' })), undefined);
});

test('push disk type on libvirt 9.0 and 11', (t) => {
  const spec: BackupSpec = { mode: 'push', disks: [{ name: 'vda' }] };
  t.is(messageOf(() => buildBackupXml(spec)), "disks[0].type: push disks need type 'file' or 'block' on libvirt < 11");
  t.is(messageOf(() => buildBackupXml(spec, { libvirtVersion: 10_010_000 })), "disks[0].type: push disks need type 'file' or 'block' on libvirt < 11");
  t.is(messageOf(() => buildBackupXml(spec, { libvirtVersion: 11_000_000 })), undefined);
  t.is(messageOf(() => buildBackupXml({ mode: 'push', disks: [{ name: 'vda', backup: 'no' }] })), undefined, "backup='no' needs no type");
});

test('fd transport needs libvirt 11.3', (t) => {
  const spec: BackupSpec = { mode: 'pull', server: { transport: 'fd', fdgroup: 'nbd' } };
  t.is(messageOf(() => buildBackupXml(spec)), "server.transport: 'fd' needs libvirt >= 11.3");
  t.is(messageOf(() => buildBackupXml(spec, { libvirtVersion: 11_003_000 })), undefined);
});

test('numbers must be non-negative integers', (t) => {
  t.is(messageOf(() => buildCheckpointXml({ creationTime: -1 })), 'creationTime: must be a non-negative integer');
  t.is(messageOf(() => buildCheckpointXml({ creationTime: 1.5 })), 'creationTime: must be a non-negative integer');
  t.is(messageOf(() => buildCheckpointXml({ creationTime: Number.NaN })), 'creationTime: must be a non-negative integer');
  t.is(messageOf(() => buildCheckpointXml({ disks: [{ name: 'vda', size: '12' as unknown as number }] })), 'disks[0].size: must be a non-negative integer');
  t.is(messageOf(() => buildBackupXml({ mode: 'pull', server: { name: 'localhost', port: -1 } })), 'server.port: must be a non-negative integer');
  t.is(messageOf(() => buildBackupXml(pull([{ name: 'vda', index: -2 }]))), 'disks[0].index: must be a non-negative integer');
  t.is(messageOf(() => buildBackupXml(pull([{ name: 'vda', index: 2 ** 32 }]))), 'disks[0].index: must be at most 4294967295');
});

test('unknown keys are rejected', (t) => {
  t.is(messageOf(() => buildCheckpointXml({ nmae: 'x' } as never)), 'nmae: unknown key');
  t.is(messageOf(() => buildBackupXml(pull([{ name: 'vda', exportName: 'x' }]))), 'disks[0].exportName: unknown key');
  t.is(messageOf(() => buildBackupXml({ mode: 'pull', server: { transport: 'unix', socket: '/s', name: 'h' } } as never)), "server.name: not allowed with transport 'unix'");
});

test('exportname and exportbitmap only in pull mode', (t) => {
  const spec = { mode: 'push', disks: [{ name: 'vda', type: 'file', exportbitmap: 'b' }] } as unknown as BackupSpec;
  t.is(messageOf(() => buildBackupXml(spec)), 'disks[0].exportbitmap: only allowed in pull mode');
});

test('mode must be push or pull', (t) => {
  t.is(messageOf(() => buildBackupXml({ mode: 'pulll' } as never)), "mode: must be 'push' or 'pull'");
  t.is(messageOf(() => buildBackupXml(null as never)), 'must be an object');
});

test('a disk may not be listed twice', (t) => {
  t.is(
    messageOf(() => buildCheckpointXml({ disks: [{ name: 'vda' }, { name: 'vda', checkpoint: 'no' }] })),
    "disks[1].name: 'vda' is listed twice",
  );
});

test('text that XML cannot carry is refused before building', (t) => {
  t.is(messageOf(() => buildCheckpointXml({ description: 'a\u0000b' })), 'description: must not contain control characters or unpaired surrogates (XML cannot carry them)');
  t.is(messageOf(() => buildCheckpointXml({ description: 'a\r\nb' })), 'description: must not contain carriage returns (XML reads them back as line feeds)');
  t.is(messageOf(() => buildCheckpointXml({ description: 'a\nb & <c> "d" \u00e9\u65e5' })), undefined);
});

test('the embedded domain must agree with its xml', (t) => {
  const xml = '<domain type="kvm"><name>vm1</name><devices/></domain>';
  t.is(messageOf(() => buildCheckpointXml({ domain: { name: 'vm2', disks: [], xml } })), 'domain.name: does not match what domain.xml says; change the xml, the typed fields follow it');
  t.regex(messageOf(() => buildCheckpointXml({ domain: { disks: [], xml: '<notdomain/>' } })) ?? '', /^domain\.xml: not a domain definition: expected root element <domain>/);
  t.is(messageOf(() => buildCheckpointXml({ domain: { type: 'kvm', name: 'vm1', disks: [], xml } })), undefined);
});

test('kept content cannot shadow modeled fields', (t) => {
  t.is(
    messageOf(() => buildCheckpointXml({ disks: [{ name: 'vda', extra: { attributes: { bitmap: 'x' } } }] })),
    'disks[0].extra.attributes.bitmap: is a modeled attribute; set the typed field instead',
  );
  t.is(messageOf(() => buildCheckpointXml({ extra: { elements: ['<name>x</name>'] } })), 'extra.elements[0]: <name> is modeled; set the typed field instead');
  t.regex(messageOf(() => buildCheckpointXml({ extra: { elements: ['<open>'] } })) ?? '', /^extra\.elements\[0\]: not well-formed XML/);
});

test('the error carries path, rule and every issue', (t) => {
  const spec = pull([{ name: 'disk0', type: 'block' }, { name: 'vdb', type: 'file', scratch: { file: 'relative' }, driver: { type: 'raw' } }]);
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
  t.is(messageOf(() => buildCheckpointXml({}, { libvirtVersion: -3 })), 'options.libvirtVersion: must be a non-negative integer such as 9000000');
});
