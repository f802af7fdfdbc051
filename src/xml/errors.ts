/**
 * Raised before anything reaches libvirt when a spec breaks a rule of the
 * schema (or of the libvirt version we build for). `path` names the field the
 * way a caller wrote it (`disks[1].scratch`), `rule` says what it must obey.
 */
export class XmlValidationError extends Error {
  override readonly name = 'XmlValidationError';
  readonly path: string;
  readonly rule: string;
  /** Every problem found, the first of which is also in `path`, `rule` and the message. */
  readonly issues: readonly ValidationIssue[];

  constructor(issues: readonly ValidationIssue[]) {
    const first = issues[0] ?? { path: '', rule: 'invalid' };
    const more = issues.length > 1 ? ` (and ${issues.length - 1} more)` : '';
    super(`${formatIssue(first)}${more}`);
    this.path = first.path;
    this.rule = first.rule;
    this.issues = issues;
  }
}

export interface ValidationIssue {
  readonly path: string;
  readonly rule: string;
}

const LONGEST_QUOTED = 60;

/**
 * A value from a document or spec, quoted for a message. Values can be any
 * length, and a message that repeats a megabyte of input helps nobody.
 */
export function quote(value: string): string {
  return value.length <= LONGEST_QUOTED ? `'${value}'` : `'${value.slice(0, LONGEST_QUOTED)}...' (${value.length} characters)`;
}

export function formatIssue(issue: ValidationIssue): string {
  return issue.path === '' ? issue.rule : `${issue.path}: ${issue.rule}`;
}

/**
 * Raised when a document is not well-formed XML, has the wrong root element,
 * or holds a value our types cannot represent. Parsing never returns a
 * partly filled object: it either succeeds completely or throws this.
 */
export class XmlParseError extends Error {
  override readonly name = 'XmlParseError';
  /** Where in the typed result the problem sits, or '' for document-level errors. */
  readonly path: string;
  readonly reason: string;

  constructor(path: string, reason: string, options?: { cause?: unknown }) {
    super(path === '' ? reason : `${path}: ${reason}`, options);
    this.path = path;
    this.reason = reason;
  }
}
