import { isDeepStrictEqual } from 'node:util';
import {
  parseBackupXml,
  parseCheckpointXml,
  parseDomainCapabilities,
  parseDomainXml,
  XmlParseError,
  type BackupSpec,
  type CheckpointSpec,
} from '../../../src/xml/index.js';
import { writeBackupXml } from '../../../src/xml/backup.js';
import { writeCheckpointXml } from '../../../src/xml/checkpoint.js';

/**
 * How many cases a property runs: `FUZZ_RUNS` for a long hand run, scaled by
 * what one case costs, or the CI default that keeps the file well under a
 * minute on two cores.
 */
export function fuzzRuns(ciDefault: number, scale = 1): number {
  const wanted = Number(process.env['FUZZ_RUNS']);
  if (!Number.isFinite(wanted) || wanted <= 0) return ciDefault;
  return Math.max(1, Math.round(wanted * scale));
}

/**
 * How long one parse may take: linear in the input, with room for a loaded
 * two-core machine (xmldom reads about 1 MB/s of dense markup there, less
 * under load). Anything super-linear blows far past it on the large cases.
 */
export function caseBoundMs(length: number): number {
  return 1_000 + (4 * length) / 1_024;
}
/** A result may not be much bigger than its input: nothing is expanded. */
const AMPLIFICATION = 16;
const AMPLIFICATION_SLACK = 1_024;
/** Error messages quote the input; they must stay short whatever it is. */
const LONGEST_ERROR_MESSAGE = 600;

interface Parser {
  readonly name: string;
  parse(xml: string): unknown;
  /** Throws when a parsed value is not what the document says: read back from what it writes, it must not change. */
  checkResult(value: unknown): void;
}

function sameAfterWriting<T>(name: string, value: T, write: (value: T) => string, parse: (xml: string) => T): void {
  const again = parse(write(value));
  if (!isDeepStrictEqual(again, value)) {
    throw new Error(`${name}: the result changes when written and read back:\n${JSON.stringify(value)}\n${JSON.stringify(again)}`);
  }
}

export const PARSERS: readonly Parser[] = [
  {
    name: 'parseBackupXml',
    parse: parseBackupXml,
    checkResult: (value) => sameAfterWriting('parseBackupXml', value as BackupSpec, writeBackupXml, parseBackupXml),
  },
  {
    name: 'parseCheckpointXml',
    parse: parseCheckpointXml,
    checkResult: (value) => sameAfterWriting('parseCheckpointXml', value as CheckpointSpec, writeCheckpointXml, parseCheckpointXml),
  },
  {
    name: 'parseDomainXml',
    parse: parseDomainXml,
    checkResult: (value) => {
      const summary = value as ReturnType<typeof parseDomainXml>;
      // The typed fields are derived from `xml`: deriving them again gives the same.
      if (!isDeepStrictEqual(parseDomainXml(summary.xml), summary)) throw new Error('parseDomainXml: the summary does not follow from its own xml');
    },
  },
  {
    name: 'parseDomainCapabilities',
    parse: parseDomainCapabilities,
    checkResult: (value) => {
      const { domainType, backupSupported, ...rest } = value as ReturnType<typeof parseDomainCapabilities>;
      const typed =
        (domainType === undefined || typeof domainType === 'string') &&
        (backupSupported === undefined || typeof backupSupported === 'boolean') &&
        Object.keys(rest).length === 0;
      if (!typed) throw new Error(`parseDomainCapabilities: untyped result ${JSON.stringify(value)}`);
    },
  },
];

/**
 * Feeds documents to every parser and holds each outcome to the contract: a
 * typed `XmlParseError` with a short message, or a result that is what the
 * document says and no bigger than it, within `caseBoundMs`. Anything else
 * throws, so fast-check shrinks it to a minimal document.
 */
export class ParserJudge {
  documents = 0;
  calls = 0;
  results = 0;
  typedErrors = 0;
  slowestMs = 0;
  slowestCase = '';

  judge(xml: string): void {
    const boundMs = caseBoundMs(xml.length);
    this.documents++;
    for (const parser of PARSERS) {
      this.calls++;
      const started = performance.now();
      let value: unknown;
      let failed: unknown;
      try {
        value = parser.parse(xml);
      } catch (error) {
        failed = error;
      }
      const elapsed = performance.now() - started;
      if (elapsed > this.slowestMs) {
        this.slowestMs = elapsed;
        this.slowestCase = `${parser.name}, ${xml.length} characters`;
      }
      if (elapsed > boundMs) throw new Error(`${parser.name} took ${elapsed.toFixed(0)} ms on ${xml.length} characters (bound ${boundMs.toFixed(0)} ms)`);
      if (failed !== undefined) {
        if (!(failed instanceof XmlParseError)) throw failed as Error;
        if (failed.message.length > LONGEST_ERROR_MESSAGE) throw new Error(`${parser.name}: a ${failed.message.length}-character error message`);
        this.typedErrors++;
        continue;
      }
      this.results++;
      const size = JSON.stringify(value).length;
      if (size > AMPLIFICATION * xml.length + AMPLIFICATION_SLACK) {
        throw new Error(`${parser.name}: a ${size}-character result from ${xml.length} characters of input`);
      }
      parser.checkResult(value);
    }
  }

  summary(target: string, startedAt: number): string {
    const seconds = ((performance.now() - startedAt) / 1000).toFixed(1);
    return (
      `${target}: ${this.documents} documents, ${this.calls} parser calls ` +
      `(${this.results} results, ${this.typedErrors} XmlParseErrors), slowest ${this.slowestMs.toFixed(1)} ms (${this.slowestCase}), ${seconds} s`
    );
  }
}
