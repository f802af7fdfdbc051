import test from 'ava';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { buildBackupXml, buildCheckpointXml, parseBackupXml, parseCheckpointXml, XmlValidationError } from '../../src/xml/index.js';
import { writeBackupXml } from '../../src/xml/backup.js';
import { writeCheckpointXml } from '../../src/xml/checkpoint.js';
import { formatLibvirtVersion } from '../../src/xml/validate.js';
import { BACKUP_SCHEMA, CHECKPOINT_SCHEMA, installedSchemaVersion, validateWithXmllint } from './helpers/xmllint.js';

/**
 * libvirt's own example and test files (doc-*, tests-*) and what this host's
 * daemon returned (daemon-*), parsed, then built the way the binding sends
 * them: every document either validates against the installed libvirt's
 * schema, or the builder refuses it and names the field.
 */

const fixtureDir = fileURLToPath(new URL('./fixtures/', import.meta.url));
const list = (kind: string): string[] =>
  readdirSync(`${fixtureDir}${kind}`)
    .filter((name) => name.endsWith('.xml'))
    .sort();
const read = (fixture: string): string => readFileSync(`${fixtureDir}${fixture}`, 'utf8');

type Call = 'backupBegin' | 'createCheckpoint' | 'createCheckpoint+REDEFINE';

interface Attempt {
  fixture: string;
  call: Call;
  schema: string;
  /** What the builder wrote, or undefined when it refused. */
  built?: string;
  refusal?: XmlValidationError;
  /** The same spec serialised without validation, to ask the schema about refusals. */
  unvalidated: string;
}

/**
 * What the builder refuses, per fixture and call, and the fields it names.
 * A change here is a change of what the binding sends to libvirt.
 */
const EXPECTED_REFUSALS: Record<string, readonly string[]> = {
  // Newer libvirt than the installed 9.0: push disk without type (11.0), fd transport (11.3).
  'backup/doc-push-full.xml backupBegin': ['disks[0].type'],
  'backup/tests-pull-fd.xml backupBegin': ['server.transport'],
  // libvirt's status XML: per-disk job state and the daemon's private TLS aliases.
  'backup/tests-pull-internal.xml backupBegin': ['disks[0].extra.attributes.state', 'disks[1].extra.attributes.state', 'extra.elements[0]'],
  // What backupGetXMLDesc reports for a running job: the image's node index.
  'backup/daemon-9.0-pull-running.xml backupBegin': ['disks[0].index'],
  // Input examples have no name or creationTime, which a redefinition needs.
  'checkpoint/doc-create.xml createCheckpoint+REDEFINE': ['name', 'creationTime'],
  'checkpoint/tests-disk-default.xml createCheckpoint+REDEFINE': ['name', 'creationTime'],
  'checkpoint/tests-empty.xml createCheckpoint+REDEFINE': ['name', 'creationTime'],
  'checkpoint/tests-sample.xml createCheckpoint+REDEFINE': ['name', 'creationTime'],
  'checkpoint/tests-size-in.xml createCheckpoint+REDEFINE': ['creationTime'],
  // Output examples carry what libvirt sets itself; a new checkpoint cannot.
  'checkpoint/tests-redefine.xml createCheckpoint': ['creationTime', 'domain'],
  'checkpoint/tests-size-out.xml createCheckpoint': ['creationTime', 'parent', 'disks[0].size'],
  'checkpoint/daemon-9.0-size.xml createCheckpoint': ['creationTime', 'domain', 'disks[0].size'],
  'checkpoint/daemon-9.0-child.xml createCheckpoint': ['creationTime', 'parent', 'domain'],
  // The documentation abbreviates the domain with "...".
  'checkpoint/doc-getxmldesc.xml createCheckpoint': ['creationTime', 'parent', 'domain', 'domain.xml'],
  'checkpoint/doc-getxmldesc.xml createCheckpoint+REDEFINE': ['domain.xml'],
  // libvirt's internal checkpoint metadata.
  'checkpoint/tests-internal-active.xml createCheckpoint': ['creationTime', 'parent', 'domain', 'extra.elements[0]'],
  'checkpoint/tests-internal-active.xml createCheckpoint+REDEFINE': ['extra.elements[0]'],
};

function attempt(fixture: string, call: Call, schema: string, build: () => string, unvalidated: string): Attempt {
  try {
    return { fixture, call, schema, built: build(), unvalidated };
  } catch (error) {
    if (!(error instanceof XmlValidationError)) throw error;
    return { fixture, call, schema, refusal: error, unvalidated };
  }
}

async function attemptsForInstalledLibvirt(version: number): Promise<Attempt[]> {
  const attempts: Attempt[] = [];
  for (const name of list('backup')) {
    const fixture = `backup/${name}`;
    const spec = parseBackupXml(read(fixture));
    attempts.push(attempt(fixture, 'backupBegin', BACKUP_SCHEMA, () => buildBackupXml(spec, { libvirtVersion: version }), writeBackupXml(spec)));
  }
  for (const name of list('checkpoint')) {
    const fixture = `checkpoint/${name}`;
    const spec = parseCheckpointXml(read(fixture));
    // backupBegin's checkpoint argument is a new checkpoint too: same rules as createCheckpoint.
    for (const [call, redefine] of [
      ['createCheckpoint', false],
      ['createCheckpoint+REDEFINE', true],
    ] as const) {
      attempts.push(attempt(fixture, call, CHECKPOINT_SCHEMA, () => buildCheckpointXml(spec, { libvirtVersion: version, redefine }), writeCheckpointXml(spec)));
    }
  }
  return attempts;
}

test('every fixture, built for each call it could go to, validates against the installed schema or is refused naming the field', async (t) => {
  const version = await installedSchemaVersion();
  const attempts = await attemptsForInstalledLibvirt(version);
  const verdictsFor = async (schema: string, documents: Array<{ xml: string; index: number }>) => {
    const verdicts = await validateWithXmllint(
      schema,
      documents.map(({ xml }) => xml),
    );
    return new Map(documents.map(({ index }, position) => [index, verdicts[position]!]));
  };
  const built = await Promise.all(
    [BACKUP_SCHEMA, CHECKPOINT_SCHEMA].map((schema) =>
      verdictsFor(
        schema,
        attempts.flatMap((entry, index) => (entry.schema === schema && entry.built !== undefined ? [{ xml: entry.built, index }] : [])),
      ),
    ),
  );
  const refusedButWritten = await Promise.all(
    [BACKUP_SCHEMA, CHECKPOINT_SCHEMA].map((schema) =>
      verdictsFor(
        schema,
        attempts.flatMap((entry, index) => (entry.schema === schema && entry.refusal !== undefined ? [{ xml: entry.unvalidated, index }] : [])),
      ),
    ),
  );
  const builtVerdict = (index: number) => built[0]!.get(index) ?? built[1]!.get(index);
  const unvalidatedVerdict = (index: number) => refusedButWritten[0]!.get(index) ?? refusedButWritten[1]!.get(index);

  const lines: string[] = [];
  let validated = 0;
  let refusedLikeSchema = 0;
  let refusedBeyondSchema = 0;
  attempts.forEach((entry, index) => {
    const key = `${entry.fixture} ${entry.call}`;
    if (entry.built !== undefined) {
      const verdict = builtVerdict(index)!;
      t.true(verdict.valid, `${key}: built, yet libvirt's schema rejects it:\n${verdict.messages.join('\n')}`);
      t.is(EXPECTED_REFUSALS[key], undefined, `${key}: expected a refusal`);
      if (verdict.valid) validated++;
      return;
    }
    const issues = entry.refusal!.issues;
    t.true(issues.length > 0 && issues.every((issue) => issue.path !== ''), `${key}: every refusal names a field`);
    t.deepEqual(
      issues.map((issue) => issue.path),
      EXPECTED_REFUSALS[key] ?? [],
      `${key}: refused for other fields than expected`,
    );
    const schemaAlsoRejects = !unvalidatedVerdict(index)!.valid;
    if (schemaAlsoRejects) refusedLikeSchema++;
    else refusedBeyondSchema++;
    const reasons = issues.map((issue) => `${issue.path}: ${issue.rule}`).join('; ');
    lines.push(
      `  refused  ${key} [${schemaAlsoRejects ? 'schema rejects it too' : 'schema accepts it; libvirt ignores or refuses it beyond the schema'}]: ${reasons}`,
    );
  });

  const summary =
    `fixtures as input to libvirt ${formatLibvirtVersion(version)}: ${attempts.length} documents from ` +
    `${new Set(attempts.map((entry) => entry.fixture)).size} fixtures; ${validated} validated with xmllint, ` +
    `${refusedLikeSchema + refusedBeyondSchema} refused (${refusedLikeSchema} that the schema rejects too, ` +
    `${refusedBeyondSchema} by rules beyond the schema)`;
  t.log([summary, ...lines].join('\n'));
  console.log([summary, ...lines].join('\n'));
  for (const key of Object.keys(EXPECTED_REFUSALS)) {
    t.true(
      attempts.some((entry) => `${entry.fixture} ${entry.call}` === key),
      `${key} is listed as refused but no such fixture was built`,
    );
  }
});
