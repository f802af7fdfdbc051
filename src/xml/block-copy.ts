// The destination of a block copy (`virDomainBlockCopy`): a `<disk>` element naming
// where the copy goes and in which format, built through the DOM like every other document.
import { XmlValidationError, quote, type ValidationIssue } from './errors.js';
import { DocumentWriter } from './node.js';

/** A file on the hypervisor host (`<disk type='file'>`). */
export interface BlockCopyFileDestination {
  type: 'file';
  /** Absolute path on the host libvirtd runs on. */
  path: string;
  /** `raw`, `qcow2`, ...; libvirt probes nothing when this is given. */
  format?: string;
}

/** A block device on the hypervisor host (`<disk type='block'>`). */
export interface BlockCopyBlockDestination {
  type: 'block';
  dev: string;
  format?: string;
}

/** A volume of a storage pool (`<disk type='volume'>`). */
export interface BlockCopyVolumeDestination {
  type: 'volume';
  pool: string;
  volume: string;
  format?: string;
}

/** Where `Domain.blockCopy()` copies a disk: a file, a block device or a storage volume. */
export type BlockCopyDestination = BlockCopyFileDestination | BlockCopyBlockDestination | BlockCopyVolumeDestination;

function checkAbsolute(value: unknown, path: string, issues: ValidationIssue[]): void {
  if (typeof value !== 'string' || !value.startsWith('/')) issues.push({ path, rule: `must be an absolute path, got ${quote(String(value))}` });
}

function checkName(value: unknown, path: string, issues: ValidationIssue[]): void {
  if (typeof value !== 'string' || value === '' || value.includes('/')) issues.push({ path, rule: `must be a name without '/', got ${quote(String(value))}` });
}

/** Everything wrong with `destination`, by field. */
export function blockCopyDestinationIssues(destination: BlockCopyDestination): ValidationIssue[] {
  const issues: ValidationIssue[] = [];
  if (typeof destination !== 'object' || destination === null) return [{ path: '', rule: 'must be an object' }];
  switch (destination.type) {
    case 'file':
      checkAbsolute(destination.path, 'path', issues);
      break;
    case 'block':
      checkAbsolute(destination.dev, 'dev', issues);
      break;
    case 'volume':
      checkName(destination.pool, 'pool', issues);
      checkName(destination.volume, 'volume', issues);
      break;
    default:
      issues.push({ path: 'type', rule: `must be 'file', 'block' or 'volume', got ${quote(String((destination as { type: unknown }).type))}` });
  }
  const format = destination.format;
  if (format !== undefined && !(typeof format === 'string' && /^[a-z0-9_-]+$/.test(format)))
    issues.push({ path: 'format', rule: `must be a format name such as raw or qcow2, got ${quote(String(format))}` });
  return issues;
}

/** `<disk type=...>` with its `<source>` and, when given, `<driver type=...>`. */
export function buildBlockCopyDestinationXml(destination: BlockCopyDestination): string {
  const issues = blockCopyDestinationIssues(destination);
  if (issues.length > 0) throw new XmlValidationError(issues);
  const writer = new DocumentWriter('disk');
  writer.setAttributes(writer.root, [['type', destination.type]]);
  if (destination.format !== undefined) writer.element(writer.root, 'driver', [['type', destination.format]]);
  const source: Array<[string, string]> =
    destination.type === 'file'
      ? [['file', destination.path]]
      : destination.type === 'block'
        ? [['dev', destination.dev]]
        : [
            ['pool', destination.pool],
            ['volume', destination.volume],
          ];
  writer.element(writer.root, 'source', source);
  return writer.serialize();
}
