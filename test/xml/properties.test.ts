import test from 'ava';
import fc from 'fast-check';
import {
  backupSpecIssues,
  buildBackupXml,
  buildCheckpointXml,
  checkpointSpecIssues,
  parseBackupXml,
  parseCheckpointXml,
  type BackupSpec,
  type CheckpointSpec,
} from '../../src/xml/index.js';
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

test('backup: parse(build(spec)) deep-equals spec, output-only index included', (t) => {
  fc.assert(
    fc.property(backupSpecWithIndex, (spec) => {
      t.deepEqual(parseBackupXml(buildBackupXml(spec)), spec);
    }),
    { numRuns: RUNS },
  );
});

test('unknown attributes and elements survive parse -> build -> parse', (t) => {
  fc.assert(
    fc.property(backupSpec, extra, extra, (spec, rootExtra, diskExtra) => {
      const withExtra = {
        ...spec,
        extra: rootExtra,
        ...(spec.disks === undefined ? {} : { disks: spec.disks.map((disk, index) => (index === 0 ? { ...disk, extra: diskExtra } : disk)) }),
      } as BackupSpec;
      t.deepEqual(parseBackupXml(buildBackupXml(withExtra)), withExtra);
    }),
    { numRuns: 100 },
  );
  fc.assert(
    fc.property(checkpointSpec, extra, (spec, rootExtra) => {
      const withExtra: CheckpointSpec = { ...spec, extra: rootExtra };
      t.deepEqual(parseCheckpointXml(buildCheckpointXml(withExtra)), withExtra);
    }),
    { numRuns: 100 },
  );
});

test('build(parse(xml)) is a fixed point: a second round changes nothing', (t) => {
  fc.assert(
    fc.property(backupSpecWithIndex, (spec) => {
      const once = buildBackupXml(spec);
      t.is(buildBackupXml(parseBackupXml(once)), once);
    }),
    { numRuns: 100 },
  );
});

test('every generated checkpoint the validator accepts, xmllint accepts too', async (t) => {
  const specs = fc.sample(checkpointSpec, { numRuns: RUNS, seed: 42 });
  for (const spec of specs) t.deepEqual(checkpointSpecIssues(spec), [], 'valid specs are never rejected');
  const verdicts = await validateWithXmllint(CHECKPOINT_SCHEMA, specs.map((spec) => buildCheckpointXml(spec)));
  const rejected = verdicts.flatMap((verdict, index) => (verdict.valid ? [] : [{ spec: specs[index], messages: verdict.messages }]));
  t.deepEqual(rejected, []);
});

test('every generated backup the validator accepts, xmllint accepts too', async (t) => {
  const specs = fc.sample(backupSpec, { numRuns: RUNS, seed: 42 });
  for (const spec of specs) t.deepEqual(backupSpecIssues(spec), [], 'valid specs are never rejected');
  const verdicts = await validateWithXmllint(BACKUP_SCHEMA, specs.map((spec) => buildBackupXml(spec)));
  const rejected = verdicts.flatMap((verdict, index) => (verdict.valid ? [] : [{ spec: specs[index], messages: verdict.messages }]));
  t.deepEqual(rejected, []);
});
