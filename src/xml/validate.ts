import { XmlValidationError, quote, type ValidationIssue } from './errors.js';
import { hasCharactersOutsideXml } from './characters.js';
import { parseStandaloneElement, type XmlExtra } from './node.js';
import { outputOnlyRule, type InputCall, type OutputOnlyNames } from './output-only.js';

/**
 * Rules shared by the checkpoint and backup validators. Each check records
 * an issue instead of throwing, so one call reports every problem; builders
 * then throw the first as an `XmlValidationError`.
 */
export class Issues {
  readonly list: ValidationIssue[] = [];

  add(path: string, rule: string): void {
    this.list.push({ path, rule });
  }

  get count(): number {
    return this.list.length;
  }

  throwIfAny(): void {
    if (this.list.length > 0) throw new XmlValidationError(this.list);
  }
}

/** Options that change which rules apply. */
export interface LibvirtVersionOptions {
  /**
   * libvirt's numeric version (major * 1,000,000 + minor * 1,000 + micro) the
   * XML is meant for. Rules that newer libvirt relaxed stay in force below
   * that version. Defaults to 9.0.0, the strictest version we support.
   */
  libvirtVersion?: number;
}

/** The libvirt version validation assumes when none is given: 9.0.0, Debian 12's. */
export const DEFAULT_LIBVIRT_VERSION = 9_000_000;

/**
 * The newest libvirt whose backup and checkpoint input schemas the
 * validators model (11.3 added `transport='fd'`). Those schemas, like every
 * older one, are closed: content this library does not model cannot
 * validate there, so kept `extra` content is refused for them. For a newer
 * target it is passed on, and libvirt judges it.
 */
export const NEWEST_MODELED_LIBVIRT_VERSION = 11_003_000;

/** `9.0`, `11.3`, `9.0.1`: a numeric libvirt version as people write it. */
export function formatLibvirtVersion(version: number): string {
  const major = Math.floor(version / 1_000_000);
  const minor = Math.floor(version / 1_000) % 1_000;
  const micro = version % 1_000;
  return micro === 0 ? `${major}.${minor}` : `${major}.${minor}.${micro}`;
}

/** Where a built document goes: the libvirt call and the version answering it. */
export interface InputTarget {
  readonly call: InputCall;
  readonly version: number;
}

export function libvirtVersionOf(options: LibvirtVersionOptions | undefined, issues: Issues): number {
  const version = options?.libvirtVersion;
  if (version === undefined) return DEFAULT_LIBVIRT_VERSION;
  if (!Number.isSafeInteger(version) || version < 0) {
    issues.add('options.libvirtVersion', 'must be a non-negative integer such as 9000000');
    return DEFAULT_LIBVIRT_VERSION;
  }
  return version;
}

export function childPath(path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`;
}

/**
 * Checks that `value` is a plain object whose keys are all in `allowed`.
 * Keys set to undefined count as absent, as TypeScript treats them.
 */
export function checkObject(value: unknown, path: string, allowed: readonly string[], issues: Issues): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    issues.add(path, 'must be an object');
    return false;
  }
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key) && (value as Record<string, unknown>)[key] !== undefined) {
      issues.add(childPath(path, key), 'unknown key');
    }
  }
  return true;
}

export function checkArray(value: unknown, path: string, issues: Issues, nonEmptyRule?: string): value is unknown[] {
  if (!Array.isArray(value)) {
    issues.add(path, 'must be an array');
    return false;
  }
  if (nonEmptyRule !== undefined && value.length === 0) {
    issues.add(path, nonEmptyRule);
    return false;
  }
  return true;
}

export interface StringRule {
  /** Whole-value pattern, as in the schema. */
  pattern?: RegExp;
  /** How the pattern is named in the error message. */
  patternText?: string;
  allowEmpty?: boolean;
  /** Text content (not an attribute): XML turns a CR into LF there, so it cannot round-trip. */
  isText?: boolean;
}

export function checkString(value: unknown, path: string, issues: Issues, rule: StringRule = {}): value is string {
  if (typeof value !== 'string') {
    issues.add(path, 'must be a string');
    return false;
  }
  if (value === '' && rule.allowEmpty !== true) {
    issues.add(path, 'must not be empty');
    return false;
  }
  if (hasCharactersOutsideXml(value)) {
    issues.add(path, 'must not contain control characters or unpaired surrogates (XML cannot carry them)');
    return false;
  }
  if (rule.isText === true && value.includes('\r')) {
    issues.add(path, 'must not contain carriage returns (XML reads them back as line feeds)');
    return false;
  }
  if (rule.pattern !== undefined && !rule.pattern.test(value)) {
    issues.add(path, `must match ${rule.patternText ?? rule.pattern.source}`);
    return false;
  }
  return true;
}

export function checkEnum<T extends string>(value: unknown, path: string, allowed: readonly T[], issues: Issues): value is T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    issues.add(path, `must be ${allowed.map((v) => `'${v}'`).join(' or ')}`);
    return false;
  }
  return true;
}

export function checkUnsigned(value: unknown, path: string, issues: Issues, max = Number.MAX_SAFE_INTEGER): value is number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    issues.add(path, 'must be a non-negative integer');
    return false;
  }
  if (value > max) {
    issues.add(path, `must be at most ${max}`);
    return false;
  }
  return true;
}

export const UNSIGNED_INT_MAX = 4_294_967_295;

/** libvirt's `checkpointName`: no leading dot, no slash or newline, usable as a file name. */
export const CHECKPOINT_NAME = { pattern: /^[a-zA-Z0-9_-][a-zA-Z0-9_.-]*$/, patternText: '[a-zA-Z0-9_-][a-zA-Z0-9_.-]*' };

/** libvirt's `diskTargetDev`. */
export const DISK_TARGET = {
  pattern: /^(ioemu:)?(fd|hd|sd|vd|xvd|ubd)[a-zA-Z0-9_]+$/,
  patternText: '(ioemu:)?(fd|hd|sd|vd|xvd|ubd)[a-zA-Z0-9_]+',
};

/** libvirt's `absFilePath`; XML Schema's `.` excludes only CR and LF. */
const ABSOLUTE_PATH = /^(\/|[a-zA-Z]:\\)[^\r\n]+$/;

export function checkAbsolutePath(value: unknown, path: string, issues: Issues): value is string {
  if (!checkString(value, path, issues)) return false;
  if (!ABSOLUTE_PATH.test(value)) {
    issues.add(path, 'must be an absolute path');
    return false;
  }
  return true;
}

const UUID = /^([a-fA-F0-9]{32}|[a-fA-F0-9]{8}-([a-fA-F0-9]{4}-){3}[a-fA-F0-9]{12})$/;

export function checkUuid(value: unknown, path: string, issues: Issues): value is string {
  return checkString(value, path, issues, { pattern: UUID, patternText: 'a UUID' });
}

// The schema's own address patterns (basictypes.rng), anchored.
const IPV4_OCTET = '((25[0-5])|(2[0-4][0-9])|(1[0-9]{2})|([1-9][0-9])|([0-9]))';
const IPV4 = `(${IPV4_OCTET}\\.){3}${IPV4_OCTET}`;
const H = '[0-9A-Fa-f]{1,4}';
const IPV6_ALTERNATIVES = [
  `(${H}:){7}${H}`,
  `(${H}:){6}:${H}`,
  `(${H}:){5}:(${H}:)?${H}`,
  `(${H}:){4}:(${H}:){0,2}${H}`,
  `(${H}:){3}:(${H}:){0,3}${H}`,
  `(${H}:){2}:(${H}:){0,4}${H}`,
  `(${H}:){6}${IPV4}`,
  `(${H}:){0,5}:${IPV4}`,
  `::(${H}:){0,5}${IPV4}`,
  `${H}::(${H}:){0,5}${H}`,
  `::(${H}:){0,6}${H}`,
  `(${H}:){1,7}:`,
  '::',
];
const HOST_NAME = new RegExp(`^([a-zA-Z0-9.-]+|${IPV4}|${IPV6_ALTERNATIVES.map((a) => `(${a})`).join('|')})$`);

export function checkHostName(value: unknown, path: string, issues: Issues): value is string {
  if (!checkString(value, path, issues)) return false;
  if (!HOST_NAME.test(value)) {
    issues.add(path, 'must be a DNS name or an IP address');
    return false;
  }
  return true;
}

const XML_NAME = /^[A-Za-z_][A-Za-z0-9_.-]*(:[A-Za-z_][A-Za-z0-9_.-]*)?$/;

/** What the `extra` of one element may hold. */
export interface ExtraRules {
  readonly target: InputTarget;
  /** Names the typed fields write; kept content must not write them twice. */
  readonly modeledAttributes?: readonly string[];
  readonly modeledElements?: readonly string[];
  /** Names libvirt writes only in output; refused whatever the version. */
  readonly outputOnly?: OutputOnlyNames;
}

/**
 * Checks kept content: attribute names must be XML names that the typed
 * fields do not already write, each element must be one well-formed element
 * that is not a modeled child (which would then appear twice), nothing may be
 * output-only, and nothing unmodeled may go to a libvirt whose schema is
 * known to have no room for it.
 */
export function checkExtra(value: unknown, path: string, rules: ExtraRules, issues: Issues): value is XmlExtra {
  if (!checkObject(value, path, ['attributes', 'elements'], issues)) return false;
  const extra = value as { attributes?: unknown; elements?: unknown };
  if (extra.attributes !== undefined) {
    const attributesPath = childPath(path, 'attributes');
    if (typeof extra.attributes !== 'object' || extra.attributes === null || Array.isArray(extra.attributes)) {
      issues.add(attributesPath, 'must be an object of attribute names to values');
    } else {
      for (const [name, attributeValue] of Object.entries(extra.attributes)) {
        const attributePath = childPath(attributesPath, name);
        if (!XML_NAME.test(name) || name === 'xmlns') {
          issues.add(attributePath, 'is not a usable XML attribute name');
        } else if (rules.modeledAttributes?.includes(name) === true) {
          issues.add(attributePath, 'is a modeled attribute; set the typed field instead');
        } else if (checkString(attributeValue, attributePath, issues, { allowEmpty: true })) {
          checkUnmodeled(name, 'attribute', rules.outputOnly?.attributes, attributePath, rules.target, issues);
        }
      }
    }
  }
  if (extra.elements !== undefined) {
    const elementsPath = childPath(path, 'elements');
    if (checkArray(extra.elements, elementsPath, issues)) {
      extra.elements.forEach((xml, index) => {
        const elementPath = `${elementsPath}[${index}]`;
        if (!checkString(xml, elementPath, issues)) return;
        let name: string;
        try {
          name = parseStandaloneElement(xml).nodeName;
        } catch (error) {
          issues.add(elementPath, error instanceof Error ? error.message : 'is not well-formed XML');
          return;
        }
        if (rules.modeledElements?.includes(name) === true) {
          issues.add(elementPath, `<${name}> is modeled; set the typed field instead`);
        } else {
          checkUnmodeled(name, 'element', rules.outputOnly?.elements, elementPath, rules.target, issues);
        }
      });
    }
  }
  return true;
}

function checkUnmodeled(
  name: string,
  kind: 'attribute' | 'element',
  outputOnly: Readonly<Record<string, string>> | undefined,
  path: string,
  target: InputTarget,
  issues: Issues,
): void {
  const source = outputOnly !== undefined && Object.hasOwn(outputOnly, name) ? outputOnly[name] : undefined;
  if (source !== undefined) {
    issues.add(path, `${kind === 'element' ? `<${name}> is ` : ''}${outputOnlyRule(source, target.call)}`);
  } else if (target.version <= NEWEST_MODELED_LIBVIRT_VERSION) {
    const shown = kind === 'element' ? `<${name}>` : quote(name);
    issues.add(
      path,
      `${kind} ${shown} is not in libvirt ${formatLibvirtVersion(target.version)}'s schema for ${target.call} input ` +
        `(unmodeled content is passed on only to libvirt newer than ${formatLibvirtVersion(NEWEST_MODELED_LIBVIRT_VERSION)})`,
    );
  }
}

/** Reports a key whose value is set although the rule forbids it in this context. */
export function forbid(object: Record<string, unknown>, key: string, path: string, rule: string, issues: Issues): void {
  if (object[key] !== undefined) issues.add(childPath(path, key), rule);
}

export function checkNoDuplicateNames(disks: readonly unknown[], path: string, issues: Issues): void {
  const seen = new Set<string>();
  disks.forEach((disk, index) => {
    if (typeof disk !== 'object' || disk === null) return;
    const name = (disk as { name?: unknown }).name;
    if (typeof name !== 'string') return;
    if (seen.has(name)) issues.add(`${path}[${index}].name`, `${quote(name)} is listed twice`);
    seen.add(name);
  });
}
