// Storage pool and volume definitions: the few fields a restore into a pool (and a
// test that makes its own pool) needs, built through the DOM like every other document.
import { XmlValidationError, quote, type ValidationIssue } from './errors.js';
import { DocumentWriter } from './node.js';

/** A directory pool: volumes are files in `path` on the host libvirtd runs on. */
export interface DirStoragePoolSpec {
  type: 'dir';
  name: string;
  /** Absolute path of the directory on the hypervisor host. */
  path: string;
  /** Mode of the directory libvirt builds, e.g. 0o711. */
  mode?: number;
}

/** A storage volume to create: name, size and format. */
export interface StorageVolumeSpec {
  name: string;
  /** The size the guest sees, in bytes. */
  capacity: number;
  /** Bytes to allocate up front (default 0: a sparse volume). */
  allocation?: number;
  /** `raw`, `qcow2`, ...: the `<target><format type=...>` libvirt creates the volume with. */
  format?: string;
  /** Mode of the file libvirt creates, e.g. 0o600. */
  mode?: number;
  /**
   * The image the new volume is a thin overlay of (`<backingStore>`): its path as the
   * hypervisor sees it, and its format. Reads of clusters the volume does not hold go there.
   */
  backingStore?: { path: string; format: string };
}

function checkName(name: unknown, path: string, issues: ValidationIssue[]): void {
  if (typeof name !== 'string' || name === '') issues.push({ path, rule: 'must be a non-empty string' });
  else if (name.includes('/')) issues.push({ path, rule: `must not contain '/', got ${quote(name)}` });
}

function checkBytes(value: unknown, path: string, issues: ValidationIssue[], optional: boolean): void {
  if (value === undefined && optional) return;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0)
    issues.push({ path, rule: `must be a whole number of bytes, got ${String(value)}` });
}

function checkMode(value: unknown, path: string, issues: ValidationIssue[]): void {
  if (value === undefined) return;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 0o7777)
    issues.push({ path, rule: `must be a file mode such as 0o600, got ${String(value)}` });
}

/** Builds `<volume>` XML for `StoragePool.createVolume()`, after checking `spec`. */
export function buildStorageVolumeXml(spec: StorageVolumeSpec): string {
  const issues: ValidationIssue[] = [];
  checkName(spec.name, 'name', issues);
  checkBytes(spec.capacity, 'capacity', issues, false);
  checkBytes(spec.allocation, 'allocation', issues, true);
  checkMode(spec.mode, 'mode', issues);
  if (spec.format !== undefined && !/^[a-z0-9_-]+$/.test(spec.format))
    issues.push({ path: 'format', rule: `must be a format name such as raw or qcow2, got ${quote(String(spec.format))}` });
  if (spec.backingStore !== undefined) {
    if (typeof spec.backingStore.path !== 'string' || !spec.backingStore.path.startsWith('/'))
      issues.push({ path: 'backingStore.path', rule: `must be an absolute path, got ${quote(String(spec.backingStore.path))}` });
    if (typeof spec.backingStore.format !== 'string' || !/^[a-z0-9_-]+$/.test(spec.backingStore.format))
      issues.push({ path: 'backingStore.format', rule: `must be a format name such as qcow2, got ${quote(String(spec.backingStore.format))}` });
  }
  if (issues.length > 0) throw new XmlValidationError(issues);
  const writer = new DocumentWriter('volume');
  const root = writer.root;
  writer.textElement(root, 'name', spec.name);
  writer.textElement(root, 'capacity', spec.capacity)!.setAttribute('unit', 'bytes');
  writer.textElement(root, 'allocation', spec.allocation ?? 0)!.setAttribute('unit', 'bytes');
  // libvirt's schema wants a <target> even when it holds nothing.
  const target = writer.element(root, 'target');
  if (spec.format !== undefined) writer.element(target, 'format', [['type', spec.format]]);
  if (spec.mode !== undefined) writer.textElement(writer.element(target, 'permissions'), 'mode', `0${spec.mode.toString(8)}`);
  if (spec.backingStore !== undefined) {
    const backing = writer.element(root, 'backingStore');
    writer.textElement(backing, 'path', spec.backingStore.path);
    writer.element(backing, 'format', [['type', spec.backingStore.format]]);
  }
  return writer.serialize();
}

/** Builds `<pool>` XML for `Connection.createStoragePool()` / `defineStoragePool()`. */
export function buildStoragePoolXml(spec: DirStoragePoolSpec): string {
  const issues: ValidationIssue[] = [];
  if (spec.type !== 'dir') issues.push({ path: 'type', rule: `only 'dir' pools are modeled, got ${quote(String(spec.type))}` });
  checkName(spec.name, 'name', issues);
  if (typeof spec.path !== 'string' || !spec.path.startsWith('/'))
    issues.push({ path: 'path', rule: `must be an absolute path, got ${quote(String(spec.path))}` });
  checkMode(spec.mode, 'mode', issues);
  if (issues.length > 0) throw new XmlValidationError(issues);
  const writer = new DocumentWriter('pool');
  writer.setAttributes(writer.root, [['type', spec.type]]);
  writer.textElement(writer.root, 'name', spec.name);
  const target = writer.element(writer.root, 'target');
  writer.textElement(target, 'path', spec.path);
  if (spec.mode !== undefined) writer.textElement(writer.element(target, 'permissions'), 'mode', `0${spec.mode.toString(8)}`);
  return writer.serialize();
}
