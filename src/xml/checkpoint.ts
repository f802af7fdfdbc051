import type { Element } from '@xmldom/xmldom';
import { XmlParseError } from './errors.js';
import { diskBitmapSupport, parseDomainXml, readDomain, type BitmapSupportOptions, type DomainSummary } from './domain.js';
import { findStrayText } from './domain-shape.js';
import { DocumentWriter, ElementReader, parseDocument, type XmlExtra } from './node.js';
import {
  CHECKPOINT_NAME,
  DISK_TARGET,
  Issues,
  checkArray,
  checkEnum,
  checkExtra,
  checkNoDuplicateNames,
  checkObject,
  checkString,
  checkUnsigned,
  childPath,
  forbid,
  libvirtVersionOf,
  type InputTarget,
  type LibvirtVersionOptions,
} from './validate.js';
import type { ValidationIssue } from './errors.js';
import { CHECKPOINT_OUTPUT_ONLY } from './output-only.js';

/** One disk of a checkpoint that tracks changes in a bitmap (the default). */
export interface CheckpointBitmapDisk {
  /** Target dev (`vda`) or the absolute path of the disk's source file. */
  name: string;
  checkpoint?: 'bitmap';
  /** Bitmap name; libvirt defaults it to the checkpoint name. */
  bitmap?: string;
  /** Output only (with the SIZE flag): bytes changed since the checkpoint. */
  size?: number;
  extra?: XmlExtra;
}

/** A disk left out of the checkpoint. */
export interface CheckpointExcludedDisk {
  name: string;
  checkpoint: 'no';
  extra?: XmlExtra;
}

/** A disk of a checkpoint: with a bitmap, or left out. */
export type CheckpointDisk = CheckpointBitmapDisk | CheckpointExcludedDisk;

/**
 * `<domaincheckpoint>`. On creation only name, description and disks are
 * used; libvirt fills in the rest, which matters again when redefining.
 * `checkpointSpecIssues` with `redefine` says which of the two a spec is for.
 */
export interface CheckpointSpec {
  name?: string;
  description?: string;
  /** Seconds since the Epoch, set by libvirt. */
  creationTime?: number;
  /** Name of the parent checkpoint (`<parent><name>`), set by libvirt. */
  parent?: string;
  /** Omit to checkpoint every disk. */
  disks?: CheckpointDisk[];
  /** The domain as it was at checkpoint time; needed to redefine on libvirt < 7.0. */
  domain?: DomainSummary;
  extra?: XmlExtra;
}

const CHECKPOINT_ELEMENTS = ['name', 'description', 'creationTime', 'parent', 'disks', 'domain'];
const DISK_ATTRIBUTES = ['name', 'checkpoint', 'bitmap', 'size'];
const ABSOLUTE_DISK_PATH = /^(\/|[a-zA-Z]:\\)[^\r\n]+$/;

export interface CheckpointBuildOptions extends LibvirtVersionOptions {
  /**
   * What the XML is for: `true` for virDomainCheckpointCreateXML with
   * REDEFINE (then libvirt needs name and creationTime), `false` for a new
   * checkpoint, from that call without REDEFINE or from virDomainBackupBegin
   * (then creationTime, parent, domain and disk sizes are refused: libvirt
   * would silently ignore them). Left out, only the schema's rules apply,
   * which allow both.
   */
  redefine?: boolean;
}

/** libvirt fills these in on creation and reads them back only when redefining. */
const SET_BY_LIBVIRT = ['creationTime', 'parent', 'domain'] as const;

/** Every rule `spec` breaks, empty when it is valid. */
export function checkpointSpecIssues(spec: unknown, options?: CheckpointBuildOptions): ValidationIssue[] {
  const issues = new Issues();
  const target: InputTarget = { call: 'virDomainCheckpointCreateXML', version: libvirtVersionOf(options, issues) };
  if (options?.redefine !== undefined && typeof options.redefine !== 'boolean') issues.add('options.redefine', 'must be true or false');
  if (!checkObject(spec, '', ['name', 'description', 'creationTime', 'parent', 'disks', 'domain', 'extra'], issues)) {
    return issues.list;
  }
  if (options?.redefine === true) {
    // libvirt's own checks on a redefinition, beyond its schema.
    if (spec.name === undefined) issues.add('name', 'required with REDEFINE: libvirt refuses a redefined checkpoint without a name');
    if (spec.creationTime === undefined) issues.add('creationTime', 'required with REDEFINE: libvirt refuses a redefined checkpoint without it');
  } else if (options?.redefine === false) {
    for (const key of SET_BY_LIBVIRT) {
      forbid(spec, key, '', 'set by libvirt when it creates the checkpoint; give it only with REDEFINE (libvirt ignores it otherwise)', issues);
    }
  }
  if (spec.name !== undefined) checkString(spec.name, 'name', issues, { ...CHECKPOINT_NAME, isText: true });
  if (spec.description !== undefined) checkString(spec.description, 'description', issues, { allowEmpty: true, isText: true });
  if (spec.creationTime !== undefined) checkUnsigned(spec.creationTime, 'creationTime', issues);
  if (spec.parent !== undefined) checkString(spec.parent, 'parent', issues, { ...CHECKPOINT_NAME, isText: true });
  if (spec.disks !== undefined && checkArray(spec.disks, 'disks', issues, 'must list at least one disk (omit it to checkpoint every disk)')) {
    spec.disks.forEach((disk, index) => checkDisk(disk, `disks[${index}]`, target, options?.redefine === false, issues));
    checkNoDuplicateNames(spec.disks, 'disks', issues);
  }
  if (spec.domain !== undefined) checkDomain(spec.domain, 'domain', issues);
  if (spec.extra !== undefined) {
    checkExtra(spec.extra, 'extra', { target, modeledElements: CHECKPOINT_ELEMENTS, outputOnly: CHECKPOINT_OUTPUT_ONLY.root }, issues);
  }
  return issues.list;
}

/** Throws an `XmlValidationError` naming the first broken rule. */
export function validateCheckpointSpec(spec: unknown, options?: CheckpointBuildOptions): asserts spec is CheckpointSpec {
  const issues = new Issues();
  issues.list.push(...checkpointSpecIssues(spec, options));
  issues.throwIfAny();
}

function checkDisk(disk: unknown, path: string, target: InputTarget, creating: boolean, issues: Issues): void {
  if (!checkObject(disk, path, ['name', 'checkpoint', 'bitmap', 'size', 'extra'], issues)) return;
  const namePath = childPath(path, 'name');
  if (checkString(disk.name, namePath, issues) && !DISK_TARGET.pattern.test(disk.name) && !ABSOLUTE_DISK_PATH.test(disk.name)) {
    issues.add(namePath, `must be a target dev matching ${DISK_TARGET.patternText} or an absolute path`);
  }
  if (disk.checkpoint !== undefined) checkEnum(disk.checkpoint, childPath(path, 'checkpoint'), ['bitmap', 'no'], issues);
  if (disk.checkpoint === 'no') {
    forbid(disk, 'bitmap', path, "not allowed with checkpoint 'no'", issues);
    forbid(disk, 'size', path, "not allowed with checkpoint 'no'", issues);
  } else {
    if (disk.bitmap !== undefined) checkString(disk.bitmap, childPath(path, 'bitmap'), issues);
    if (disk.size !== undefined && creating) {
      issues.add(childPath(path, 'size'), 'output-only (getXMLDesc with the SIZE flag reports it); libvirt ignores it on creation');
    } else if (disk.size !== undefined) {
      checkUnsigned(disk.size, childPath(path, 'size'), issues);
    }
  }
  if (disk.extra !== undefined) checkExtra(disk.extra, childPath(path, 'extra'), { target, modeledAttributes: DISK_ATTRIBUTES }, issues);
}

/**
 * The typed fields of an embedded domain are derived from its `xml`, which
 * is what gets written; a mismatch means the caller edited one and not the
 * other, and guessing which one they meant would be wrong.
 */
function checkDomain(domain: unknown, path: string, issues: Issues): void {
  if (!checkObject(domain, path, ['type', 'name', 'uuid', 'disks', 'xml'], issues)) return;
  const xmlPath = childPath(path, 'xml');
  if (!checkString(domain.xml, xmlPath, issues)) return;
  let parsed: DomainSummary;
  try {
    const root = parseDocument(domain.xml, 'domain');
    parsed = readDomain(root, '');
    const stray = findStrayText(root);
    if (stray !== undefined) {
      issues.add(xmlPath, `text '${stray.text}' beside child elements in ${stray.where}: libvirt's domain schema has no room for it`);
    }
  } catch (error) {
    issues.add(xmlPath, error instanceof XmlParseError ? `not a domain definition: ${error.message}` : 'not a domain definition');
    return;
  }
  for (const key of ['type', 'name', 'uuid', 'disks'] as const) {
    if (domain[key] !== undefined && !sameData(domain[key], parsed[key])) {
      issues.add(childPath(path, key), `does not match what domain.xml says; change the xml, the typed fields follow it`);
    }
  }
}

function sameData(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const aKeys = Object.keys(a).filter((key) => (a as Record<string, unknown>)[key] !== undefined);
  const bKeys = Object.keys(b).filter((key) => (b as Record<string, unknown>)[key] !== undefined);
  if (aKeys.length !== bKeys.length) return false;
  return aKeys.every((key) => sameData((a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key]));
}

/** Builds `<domaincheckpoint>` XML, after validating `spec`. */
export function buildCheckpointXml(spec: CheckpointSpec, options?: CheckpointBuildOptions): string {
  validateCheckpointSpec(spec, options);
  return writeCheckpointXml(spec);
}

/** Serialises without validating; tests use it to see what libvirt's schema says about invalid specs. */
export function writeCheckpointXml(spec: CheckpointSpec): string {
  const writer = new DocumentWriter('domaincheckpoint');
  const root = writer.root;
  writer.textElement(root, 'name', spec.name);
  writer.textElement(root, 'description', spec.description);
  if (spec.parent !== undefined) writer.textElement(writer.element(root, 'parent'), 'name', spec.parent);
  writer.textElement(root, 'creationTime', spec.creationTime);
  if (spec.disks !== undefined) {
    const disks = writer.element(root, 'disks');
    for (const disk of spec.disks) {
      const both = disk as CheckpointBitmapDisk | (CheckpointExcludedDisk & Partial<CheckpointBitmapDisk>);
      const element = writer.element(disks, 'disk', [
        ['name', both.name],
        ['checkpoint', both.checkpoint],
        ['bitmap', both.bitmap],
        ['size', both.size],
      ]);
      writer.writeExtra(element, disk.extra);
    }
  }
  if (spec.domain !== undefined) writer.importElement(root, spec.domain.xml);
  writer.writeExtra(root, spec.extra);
  return writer.serialize();
}

/** Parses `<domaincheckpoint>` XML as libvirt writes or accepts it. */
export function parseCheckpointXml(xml: string): CheckpointSpec {
  const reader = new ElementReader(parseDocument(xml, 'domaincheckpoint'), '');
  const spec: CheckpointSpec = {};
  const name = reader.childText('name');
  if (name !== undefined) spec.name = name;
  const description = reader.childText('description');
  if (description !== undefined) spec.description = description;
  const creationTime = reader.unsignedChildText('creationTime');
  if (creationTime !== undefined) spec.creationTime = creationTime;
  const parent = reader.child('parent');
  if (parent !== undefined) {
    const parentName = new ElementReader(parent, 'parent').childText('name');
    if (parentName === undefined) throw new XmlParseError('parent', 'missing <name>');
    spec.parent = parentName;
  }
  const disks = reader.child('disks');
  if (disks !== undefined) {
    spec.disks = new ElementReader(disks, 'disks').children('disk').map((disk, index) => readDisk(disk, `disks[${index}]`));
  }
  const domain = reader.child('domain');
  if (domain !== undefined) spec.domain = readDomain(domain, 'domain');
  const extra = reader.extra();
  if (extra !== undefined) spec.extra = extra;
  return spec;
}

function readDisk(element: Element, path: string): CheckpointDisk {
  const reader = new ElementReader(element, path);
  const name = reader.attribute('name');
  if (name === undefined) throw new XmlParseError(reader.fieldPath('name'), 'missing');
  const checkpoint = reader.enumAttribute('checkpoint', ['bitmap', 'no'] as const);
  let disk: CheckpointDisk;
  if (checkpoint === 'no') {
    disk = { name, checkpoint };
  } else {
    const bitmapDisk: CheckpointBitmapDisk = { name };
    if (checkpoint !== undefined) bitmapDisk.checkpoint = checkpoint;
    const bitmap = reader.attribute('bitmap');
    if (bitmap !== undefined) bitmapDisk.bitmap = bitmap;
    const size = reader.unsignedAttribute('size');
    if (size !== undefined) bitmapDisk.size = size;
    disk = bitmapDisk;
  }
  const extra = reader.extra();
  if (extra !== undefined) disk.extra = extra;
  return disk;
}

/**
 * The `disks` list for a checkpoint of `domain`: a bitmap on every disk that
 * can hold one, `checkpoint='no'` on the others (a raw disk in the list
 * without it would make libvirt refuse the whole checkpoint).
 */
export function checkpointDisksFor(domain: DomainSummary | string, options?: BitmapSupportOptions): CheckpointDisk[] {
  const summary = typeof domain === 'string' ? parseDomainXml(domain) : domain;
  const disks: CheckpointDisk[] = [];
  for (const disk of summary.disks) {
    const name = disk.target?.dev;
    if (name === undefined) continue;
    disks.push({ name, checkpoint: diskBitmapSupport(disk, options).supported ? 'bitmap' : 'no' });
  }
  return disks;
}
