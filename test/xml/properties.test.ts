import test from 'ava';
import fc from 'fast-check';
import {
  NEWEST_MODELED_LIBVIRT_VERSION,
  backupSpecIssues,
  buildBackupXml,
  buildCheckpointXml,
  checkpointSpecIssues,
  parseBackupXml,
  parseCheckpointXml,
  type BackupSpec,
  type CheckpointSpec,
} from '../../src/xml/index.js';
import { writeBackupXml } from '../../src/xml/backup.js';
import { backupSpec, backupSpecWithIndex, checkpointSpec, extra } from './helpers/arbitraries.js';
import { BACKUP_SCHEMA, CHECKPOINT_SCHEMA, validateWithXmllint } from './helpers/xmllint.js';

const RUNS = 300;

test('checkpoint: parse(build(spec)) deep-equals spec', (t) => {
  fc.assert(
    fc.property(checkpointSpec, (spec) => {
      t.deepEqual(parseCheckpointXml(buildCheckpointXml(spec)), spec);
    }),
    { numRuns: RUNS },
  );
});

test('backup: parse(build(spec)) deep-equals spec', (t) => {
  fc.assert(
    fc.property(backupSpec, (spec) => {
      t.deepEqual(parseBackupXml(buildBackupXml(spec)), spec);
    }),
    { numRuns: RUNS },
  );
});

test('backup: the output-only index is read back as written, and the builder refuses it naming each disk', (t) => {
  fc.assert(
    fc.property(backupSpecWithIndex, (spec) => {
      t.deepEqual(parseBackupXml(writeBackupXml(spec)), spec);
      const withIndex = (spec.disks ?? []).flatMap((disk, position) => (disk.index === undefined ? [] : [`disks[${position}].index`]));
      const refused = backupSpecIssues(spec)
        .filter((issue) => issue.rule.startsWith('output-only'))
        .map((issue) => issue.path);
      t.deepEqual(refused, withIndex);
    }),
    { numRuns: RUNS },
  );
});

/** Past every schema the validators model: unmodeled content is passed on for libvirt to judge. */
const NEWER_THAN_MODELED = { libvirtVersion: NEWEST_MODELED_LIBVIRT_VERSION + 1_000_000 };

test('unknown attributes and elements survive parse -> build -> parse for a libvirt newer than the modeled schemas', (t) => {
  fc.assert(
    fc.property(backupSpec, extra, extra, (spec, rootExtra, diskExtra) => {
      const withExtra = {
        ...spec,
        extra: rootExtra,
        ...(spec.disks === undefined ? {} : { disks: spec.disks.map((disk, index) => (index === 0 ? { ...disk, extra: diskExtra } : disk)) }),
      } as BackupSpec;
      t.deepEqual(parseBackupXml(buildBackupXml(withExtra, NEWER_THAN_MODELED)), withExtra);
    }),
    { numRuns: 100 },
  );
  fc.assert(
    fc.property(checkpointSpec, extra, (spec, rootExtra) => {
      const withExtra: CheckpointSpec = { ...spec, extra: rootExtra };
      t.deepEqual(parseCheckpointXml(buildCheckpointXml(withExtra, NEWER_THAN_MODELED)), withExtra);
    }),
    { numRuns: 100 },
  );
});

test('unknown content is refused, naming it, for every libvirt whose schema is modeled (they have no room for it)', (t) => {
  const modeledVersion = fc.integer({ min: 0, max: NEWEST_MODELED_LIBVIRT_VERSION });
  fc.assert(
    fc.property(checkpointSpec, extra, modeledVersion, (spec, rootExtra, libvirtVersion) => {
      const paths = checkpointSpecIssues({ ...spec, extra: rootExtra }, { libvirtVersion })
        .filter((issue) => issue.rule.includes('unmodeled content is passed on only to libvirt newer than'))
        .map((issue) => issue.path);
      const expected = [
        ...Object.keys(rootExtra.attributes ?? {}).map((name) => `extra.attributes.${name}`),
        ...(rootExtra.elements ?? []).map((_, index) => `extra.elements[${index}]`),
      ];
      t.deepEqual(paths, expected);
    }),
    { numRuns: 100 },
  );
});

test('build(parse(xml)) is a fixed point: a second round changes nothing', (t) => {
  fc.assert(
    fc.property(backupSpec, (spec) => {
      const once = buildBackupXml(spec);
      t.is(buildBackupXml(parseBackupXml(once)), once);
    }),
    { numRuns: 100 },
  );
});

test('every generated checkpoint the validator accepts, xmllint accepts too', async (t) => {
  const specs = fc.sample(checkpointSpec, { numRuns: RUNS, seed: 42 });
  for (const spec of specs) t.deepEqual(checkpointSpecIssues(spec), [], 'valid specs are never rejected');
  const verdicts = await validateWithXmllint(
    CHECKPOINT_SCHEMA,
    specs.map((spec) => buildCheckpointXml(spec)),
  );
  const rejected = verdicts.flatMap((verdict, index) => (verdict.valid ? [] : [{ spec: specs[index], messages: verdict.messages }]));
  t.deepEqual(rejected, []);
});

test('every generated backup the validator accepts, xmllint accepts too', async (t) => {
  const specs = fc.sample(backupSpec, { numRuns: RUNS, seed: 42 });
  for (const spec of specs) t.deepEqual(backupSpecIssues(spec), [], 'valid specs are never rejected');
  const verdicts = await validateWithXmllint(
    BACKUP_SCHEMA,
    specs.map((spec) => buildBackupXml(spec)),
  );
  const rejected = verdicts.flatMap((verdict, index) => (verdict.valid ? [] : [{ spec: specs[index], messages: verdict.messages }]));
  t.deepEqual(rejected, []);
});
