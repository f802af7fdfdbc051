import test from 'ava';
import fc from 'fast-check';
import { backupSpecIssues, checkpointSpecIssues, type BackupSpec, type CheckpointSpec } from '../../src/xml/index.js';
import { writeBackupXml } from '../../src/xml/backup.js';
import { writeCheckpointXml } from '../../src/xml/checkpoint.js';
import { backupSpec, checkpointSpec, pullBackupSpec, pushBackupSpec } from './helpers/arbitraries.js';
import { BACKUP_SCHEMA, CHECKPOINT_SCHEMA, validateWithXmllint } from './helpers/xmllint.js';

type Loose = Record<string, any>;
/** `stricter`: the schema allows it, but libvirt or common sense does not, so only we refuse it. */
type Mutation<T> = { name: string; rule: string; apply: (spec: T) => T; stricter?: boolean };

const clone = <T>(value: T): T => structuredClone(value);
function firstDisk(spec: Loose, make: Loose): Loose {
  spec.disks ??= [make];
  if (spec.disks.length === 0) spec.disks.push(make);
  return spec.disks[0];
}
const activePushDisk = (spec: Loose): Loose => {
  const disk = firstDisk(spec, { name: 'vdq', type: 'file' });
  if (disk.backup === 'no') {
    delete disk.backup;
    disk.type = 'file';
  }
  return disk;
};
const activePullDisk = (spec: Loose): Loose => {
  const disk = firstDisk(spec, { name: 'vdq', type: 'file' });
  if (disk.backup === 'no') delete disk.backup;
  return disk;
};

/** Each breaks one rule of libvirt 9.0's schema; `rule` is part of what our validator must say. */
const pushMutations: Array<Mutation<Loose>> = [
  { name: 'push disk without type', rule: "push disks need type 'file' or 'block' on libvirt < 11", apply: (s) => (delete activePushDisk(s).type, s) },
  { name: 'scratch in push mode', rule: 'only allowed in pull mode', apply: (s) => ((activePushDisk(s).scratch = { file: '/x' }), s) },
  { name: 'exportname in push mode', rule: 'only allowed in pull mode', apply: (s) => ((activePushDisk(s).exportname = 'e'), s) },
  { name: 'server in push mode', rule: 'only allowed in pull mode', apply: (s) => ((s.server = { transport: 'unix', socket: '/s' }), s) },
  { name: 'unknown target format', rule: "must be 'raw'", apply: (s) => ((activePushDisk(s).driver = { type: 'qcow9' }), s) },
  {
    name: 'block target given as file',
    rule: "not allowed with type 'block'",
    apply: (s) => {
      const disk = activePushDisk(s);
      disk.type = 'block';
      disk.target = { file: '/f' };
      return s;
    },
  },
  {
    name: 'backup no with a type',
    rule: "not allowed with backup 'no'",
    apply: (s) => {
      const disk = activePushDisk(s);
      disk.backup = 'no';
      delete disk.target;
      delete disk.driver;
      return s;
    },
  },
];

const pullMutations: Array<Mutation<Loose>> = [
  { name: 'target in pull mode', rule: 'only allowed in push mode', apply: (s) => ((activePullDisk(s).target = { file: '/x' }), s) },
  { name: 'relative socket', rule: 'must be an absolute path', apply: (s) => ((s.server = { transport: 'unix', socket: 'tmp/x.sock' }), s) },
  { name: 'socket "/" alone', rule: 'must be an absolute path', apply: (s) => ((s.server = { transport: 'unix', socket: '/' }), s) },
  { name: 'bad host name', rule: 'must be a DNS name or an IP address', apply: (s) => ((s.server = { name: 'bad host!' }), s) },
  { name: 'port beyond 65535', rule: 'must be at most 65535', apply: (s) => ((s.server = { name: 'localhost', port: 70000 }), s), stricter: true },
  { name: 'empty exportname', rule: 'must not be empty', apply: (s) => ((activePullDisk(s).exportname = ''), s), stricter: true },
  { name: 'tcp without name', rule: 'required', apply: (s) => ((s.server = { transport: 'tcp' }), s) },
  { name: 'fd transport on 9.0', rule: "'fd' needs libvirt >= 11.3", apply: (s) => ((s.server = { transport: 'fd', fdgroup: 'g' }), s) },
  { name: 'no server', rule: 'required in pull mode', apply: (s) => (delete s.server, s) },
  {
    name: 'raw scratch',
    rule: "pull scratch must be 'qcow2'",
    apply: (s) => {
      const disk = activePullDisk(s);
      disk.type = 'file';
      disk.scratch = { file: '/s' };
      disk.driver = { type: 'raw' };
      return s;
    },
  },
  {
    name: 'block without scratch',
    rule: "required with type 'block'",
    apply: (s) => {
      const disk = activePullDisk(s);
      disk.type = 'block';
      delete disk.scratch;
      delete disk.driver;
      return s;
    },
  },
  {
    name: 'backup yes without type',
    rule: "pull disks with backup 'yes' need type",
    apply: (s) => {
      const disk = activePullDisk(s);
      disk.backup = 'yes';
      delete disk.type;
      if (disk.scratch?.dev !== undefined) disk.scratch = { file: '/s' };
      return s;
    },
  },
  {
    name: 'driver without scratch',
    rule: 'only allowed together with scratch',
    apply: (s) => {
      const disk = activePullDisk(s);
      disk.type = 'file';
      delete disk.scratch;
      disk.driver = { type: 'qcow2' };
      return s;
    },
  },
];

/** Apply to any mode: the first disk (or the root) gets an invalid value. */
const commonMutations: Array<Mutation<Loose>> = [
  // The schema takes any text here, but it names a checkpoint, and those match the pattern.
  { name: 'bad incremental', rule: 'must match [a-zA-Z0-9_-][a-zA-Z0-9_.-]*', apply: (s) => ((s.incremental = '../escape'), s), stricter: true },
  {
    name: 'duplicate disk',
    rule: 'is listed twice',
    apply: (s) => {
      const disk = firstDisk(s, { name: 'vdz', backup: 'no' });
      s.disks.push(clone(disk));
      return s;
    },
    stricter: true,
  },
  { name: 'bad disk name', rule: 'must match a disk target dev', apply: (s) => ((firstDisk(s, { name: 'x', backup: 'no' }).name = 'disk0'), s) },
  { name: 'empty disks', rule: 'must list at least one disk', apply: (s) => ((s.disks = []), s) },
  {
    name: 'full with incremental',
    rule: "not allowed with backupmode 'full'",
    apply: (s) => {
      const disk = firstDisk(s, { name: 'vdz', backup: 'no' });
      disk.backupmode = 'full';
      disk.incremental = 'c1';
      return s;
    },
  },
];

const storageKey = (spec: Loose): string => (spec.mode === 'pull' ? 'scratch' : 'target');
function withStorage(spec: Loose, change: (storage: Loose) => void): Loose {
  const disk = spec.mode === 'pull' ? activePullDisk(spec) : activePushDisk(spec);
  const key = storageKey(spec);
  disk.type = 'file';
  disk[key] = { file: '/data/file' };
  delete disk.driver;
  change(disk[key]);
  return spec;
}
const encryptionMutations: Array<Mutation<Loose>> = [
  {
    name: 'secret with uuid and usage',
    rule: 'needs exactly one of uuid and usage',
    apply: (s) =>
      withStorage(s, (st) => (st.encryption = { format: 'luks', secret: { type: 'passphrase', uuid: '0a81f5b2-8403-7b23-c8d6-21ccc2f80d6f', usage: 'u' } })),
  },
  {
    name: 'secret uuid malformed',
    rule: 'must match a UUID',
    apply: (s) => withStorage(s, (st) => (st.encryption = { format: 'luks', secret: { type: 'passphrase', uuid: 'not-a-uuid' } })),
  },
  {
    name: 'cipher without ivgen',
    rule: 'cipher and ivgen go together',
    apply: (s) => withStorage(s, (st) => (st.encryption = { format: 'luks', secret: { type: 'passphrase', usage: 'u' }, cipher: { name: 'aes', size: 256 } })),
  },
  {
    name: 'negative cipher size',
    rule: 'must be a non-negative integer',
    apply: (s) =>
      withStorage(
        s,
        (st) => (st.encryption = { format: 'luks', secret: { type: 'passphrase', usage: 'u' }, cipher: { name: 'aes', size: -1 }, ivgen: { name: 'plain64' } }),
      ),
  },
  {
    name: 'seclabel without label',
    rule: "required unless relabel is 'no'",
    apply: (s) => withStorage(s, (st) => (st.seclabels = [{ model: 'dac', relabel: 'yes' }])),
  },
  {
    name: 'seclabel relabel no with label',
    rule: "not allowed with relabel 'no'",
    apply: (s) => withStorage(s, (st) => (st.seclabels = [{ relabel: 'no', label: 'x' }])),
  },
  { name: 'relative target path', rule: 'must be an absolute path', apply: (s) => withStorage(s, (st) => (st.file = 'relative/path')) },
  { name: 'path with a line break', rule: 'must be an absolute path', apply: (s) => withStorage(s, (st) => (st.file = '/a\nb')) },
];

const checkpointMutations: Array<Mutation<Loose>> = [
  { name: 'name with slash', rule: 'must match [a-zA-Z0-9_-][a-zA-Z0-9_.-]*', apply: (s) => ((s.name = 'a/b'), s) },
  { name: 'name with leading dot', rule: 'must match [a-zA-Z0-9_-][a-zA-Z0-9_.-]*', apply: (s) => ((s.name = '.hidden'), s) },
  { name: 'bad parent', rule: 'must match', apply: (s) => ((s.parent = '../up'), s) },
  { name: 'negative creationTime', rule: 'must be a non-negative integer', apply: (s) => ((s.creationTime = -1), s) },
  { name: 'fractional creationTime', rule: 'must be a non-negative integer', apply: (s) => ((s.creationTime = 1.5), s) },
  { name: 'empty disks', rule: 'must list at least one disk', apply: (s) => ((s.disks = []), s) },
  { name: 'disk name neither target nor path', rule: 'must be a target dev', apply: (s) => ((s.disks = [{ name: 'disk0' }]), s) },
  {
    name: 'bitmap on an excluded disk',
    rule: "not allowed with checkpoint 'no'",
    apply: (s) => ((s.disks = [{ name: 'vda', checkpoint: 'no', bitmap: 'b' }]), s),
  },
  { name: 'negative size', rule: 'must be a non-negative integer', apply: (s) => ((s.disks = [{ name: 'vda', size: -5 }]), s) },
  { name: 'unknown checkpoint kind', rule: "must be 'bitmap' or 'no'", apply: (s) => ((s.disks = [{ name: 'vda', checkpoint: 'yes' }]), s) },
];

function mutated<T>(base: fc.Arbitrary<T>, mutations: Array<Mutation<Loose>>) {
  return fc.tuple(base, fc.constantFrom(...mutations)).map(([spec, mutation]) => ({ mutation, spec: mutation.apply(clone(spec) as Loose) }));
}

test('backup: every invalid spec xmllint rejects, our validator rejects first, naming the rule', async (t) => {
  const cases = [
    ...fc.sample(mutated(pushBackupSpec, [...pushMutations, ...commonMutations, ...encryptionMutations]), { numRuns: 250, seed: 7 }),
    ...fc.sample(mutated(pullBackupSpec, [...pullMutations, ...commonMutations, ...encryptionMutations]), { numRuns: 250, seed: 8 }),
  ];
  const verdicts = await validateWithXmllint(
    BACKUP_SCHEMA,
    cases.map(({ spec }) => writeBackupXml(spec as BackupSpec)),
  );
  cases.forEach(({ mutation, spec }, index) => {
    const issues = backupSpecIssues(spec);
    if (mutation.stricter !== true) t.false(verdicts[index]!.valid, `xmllint should reject "${mutation.name}"`);
    t.true(
      issues.some((issue) => issue.rule.includes(mutation.rule)),
      `"${mutation.name}" should be reported as "${mutation.rule}", got ${JSON.stringify(issues)}`,
    );
  });
});

test('checkpoint: every invalid spec xmllint rejects, our validator rejects first, naming the rule', async (t) => {
  const cases = fc.sample(mutated(checkpointSpec, checkpointMutations), { numRuns: 200, seed: 9 });
  const verdicts = await validateWithXmllint(
    CHECKPOINT_SCHEMA,
    cases.map(({ spec }) => writeCheckpointXml(spec as CheckpointSpec)),
  );
  cases.forEach(({ mutation, spec }, index) => {
    const issues = checkpointSpecIssues(spec);
    if (mutation.stricter !== true) t.false(verdicts[index]!.valid, `xmllint should reject "${mutation.name}"`);
    t.true(
      issues.some((issue) => issue.rule.includes(mutation.rule)),
      `"${mutation.name}" should be reported as "${mutation.rule}", got ${JSON.stringify(issues)}`,
    );
  });
});

test('no spec passes our validator and then fails xmllint (mixed valid and invalid input)', async (t) => {
  const mixed = fc.sample(
    fc.oneof(
      backupSpec,
      mutated(pushBackupSpec, [...pushMutations, ...commonMutations, ...encryptionMutations]).map(({ spec }) => spec as BackupSpec),
      mutated(pullBackupSpec, [...pullMutations, ...commonMutations, ...encryptionMutations]).map(({ spec }) => spec as BackupSpec),
    ),
    { numRuns: 300, seed: 11 },
  );
  const verdicts = await validateWithXmllint(
    BACKUP_SCHEMA,
    mixed.map((spec) => writeBackupXml(spec)),
  );
  let accepted = 0;
  mixed.forEach((spec, index) => {
    if (backupSpecIssues(spec).length === 0) {
      accepted++;
      t.true(verdicts[index]!.valid, `validator accepted what xmllint rejects: ${JSON.stringify(spec)}\n${verdicts[index]!.messages.join('\n')}`);
    }
  });
  t.true(accepted > 0 && accepted < mixed.length, 'the sample holds both valid and invalid specs');
});
