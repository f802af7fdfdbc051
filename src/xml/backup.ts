import type { Element } from '@xmldom/xmldom';
import { XmlParseError, type ValidationIssue } from './errors.js';
import { DocumentWriter, ElementReader, parseDocument, type XmlExtra } from './node.js';
import {
  CHECKPOINT_NAME,
  DISK_TARGET,
  Issues,
  UNSIGNED_INT_MAX,
  checkAbsolutePath,
  checkArray,
  checkEnum,
  checkExtra,
  checkHostName,
  checkNoDuplicateNames,
  checkObject,
  checkString,
  checkUnsigned,
  checkUuid,
  childPath,
  forbid,
  libvirtVersionOf,
  type InputTarget,
  type LibvirtVersionOptions,
} from './validate.js';
import { BACKUP_DISK_INDEX_SOURCE, BACKUP_OUTPUT_ONLY, outputOnlyRule } from './output-only.js';

/** libvirt's boolean attribute values. */
export type YesNo = 'yes' | 'no';
/** Whether a disk's backup holds all of it or only what changed since a checkpoint. */
export type BackupDiskMode = 'full' | 'incremental';
/** Whether a backup target or scratch is a file or a block device. */
export type BackupDiskType = 'file' | 'block';

/** A per-device security label override on a backup target or scratch. */
export interface Seclabel {
  model?: string;
  /** 'no' stands alone; otherwise a `label` is required. */
  relabel?: YesNo;
  /** Output only; stands alone. */
  labelskip?: YesNo;
  label?: string;
  extra?: XmlExtra;
}

/** LUKS encryption's `<secret>`: the libvirt secret holding the passphrase. */
export interface EncryptionSecret {
  type: 'passphrase';
  /** Exactly one of uuid and usage. */
  uuid?: string;
  usage?: string;
  extra?: XmlExtra;
}

/** LUKS encryption's `<cipher>`. */
export interface EncryptionCipher {
  name: string;
  size: number;
  /** Given together with hash, or not at all. */
  mode?: string;
  hash?: string;
  extra?: XmlExtra;
}

/** LUKS encryption's `<ivgen>`. */
export interface EncryptionIvgen {
  name: string;
  hash?: string;
  extra?: XmlExtra;
}

/** LUKS encryption of a backup target or scratch image. */
export interface BackupEncryption {
  format: 'luks';
  engine?: 'qemu';
  secret: EncryptionSecret;
  /** Given together with ivgen, or not at all. */
  cipher?: EncryptionCipher;
  ivgen?: EncryptionIvgen;
  extra?: XmlExtra;
}

/** `<target>` (push) or `<scratch>` (pull): a file for type 'file', a device for type 'block'. */
export interface BackupStorage {
  file?: string;
  dev?: string;
  seclabels?: Seclabel[];
  encryption?: BackupEncryption;
  extra?: XmlExtra;
}

/** A backup disk's `<driver>`: the image format. */
export interface BackupDriver {
  /** Image format: any storage format for push targets, only 'qcow2' for pull scratch. */
  type: string;
  extra?: XmlExtra;
}

interface BackupDiskCommon {
  /** The disk's target dev (`vda`). */
  name: string;
  /** 'no' leaves the disk out; nothing but name, backupmode and incremental may go with it. */
  backup?: YesNo;
  type?: BackupDiskType;
  backupmode?: BackupDiskMode;
  /** Checkpoint this disk's incremental backup starts from; not with backupmode 'full'. */
  incremental?: string;
  driver?: BackupDriver;
  /**
   * Output only: the node index libvirt reports in `backupGetXMLDesc`. The
   * parser reads it; the builder refuses it, as virDomainBackupBegin would.
   */
  index?: number;
  extra?: XmlExtra;
}

/** A disk of a push backup: where the hypervisor writes it. */
export interface PushBackupDisk extends BackupDiskCommon {
  target?: BackupStorage;
}

/** A disk of a pull backup: its export and scratch file. */
export interface PullBackupDisk extends BackupDiskCommon {
  /** NBD export name; libvirt defaults it to the disk name. */
  exportname?: string;
  /** Name of the dirty bitmap the export offers for an incremental backup. */
  exportbitmap?: string;
  scratch?: BackupStorage;
}

/** A pull backup's NBD server on TCP. */
export interface TcpBackupServer {
  /** 'tcp' is the default and may be left out. */
  transport?: 'tcp';
  name: string;
  port?: number;
  tls?: YesNo;
  extra?: XmlExtra;
}

/** A pull backup's NBD server on a Unix socket. */
export interface UnixBackupServer {
  transport: 'unix';
  socket: string;
  tls?: YesNo;
  extra?: XmlExtra;
}

/** Since libvirt 11.3: the NBD server listens on file descriptors passed with virDomainFDAssociate. */
export interface FdBackupServer {
  transport: 'fd';
  fdgroup: string;
  tls?: YesNo;
  extra?: XmlExtra;
}

/** Where a pull backup's NBD server listens. */
export type BackupServer = TcpBackupServer | UnixBackupServer | FdBackupServer;

/** Push mode: the hypervisor writes each disk to its target. */
export interface PushBackupSpec {
  mode: 'push';
  /** Checkpoint to back up from; omit for a full backup. */
  incremental?: string;
  /** Omit to back up every disk. */
  disks?: PushBackupDisk[];
  extra?: XmlExtra;
}

/** Pull mode: the hypervisor serves each disk over NBD until the job is aborted. */
export interface PullBackupSpec {
  mode: 'pull';
  incremental?: string;
  server: BackupServer;
  disks?: PullBackupDisk[];
  extra?: XmlExtra;
}

/** `<domainbackup>`, discriminated on `mode`. */
export type BackupSpec = PushBackupSpec | PullBackupSpec;

const ROOT_ATTRIBUTES = ['mode'];
const ROOT_ELEMENTS = ['incremental', 'server', 'disks'];
const SERVER_ATTRIBUTES = ['transport', 'tls', 'name', 'port', 'socket', 'fdgroup'];
// `index` is missing on purpose: it is output-only, and kept content gets that refusal.
const DISK_ATTRIBUTES = ['name', 'backup', 'type', 'backupmode', 'incremental', 'exportname', 'exportbitmap'];
const DISK_ELEMENTS = ['driver', 'target', 'scratch'];

/** libvirt's storageFormat: what a push target may be written as. */
const STORAGE_FORMATS = ['raw', 'dir', 'bochs', 'cloop', 'dmg', 'iso', 'vpc', 'vdi', 'fat', 'vhd', 'ploop', 'luks', 'cow', 'qcow', 'qcow2', 'qed', 'vmdk'];

/** libvirt 11.0 made `type` optional on push disks (defaulting to 'file'). */
const PUSH_TYPE_OPTIONAL_SINCE = 11_000_000;
/** libvirt 11.3 added `transport='fd'`. */
const FD_TRANSPORT_SINCE = 11_003_000;

/** Every rule `spec` breaks, empty when it is valid. */
export function backupSpecIssues(spec: unknown, options?: LibvirtVersionOptions): ValidationIssue[] {
  const issues = new Issues();
  const target: InputTarget = { call: 'virDomainBackupBegin', version: libvirtVersionOf(options, issues) };
  if (!checkObject(spec, '', ['mode', 'incremental', 'server', 'disks', 'extra'], issues)) return issues.list;
  if (!checkEnum(spec.mode, 'mode', ['push', 'pull'], issues)) return issues.list;
  const mode = spec.mode;
  if (spec.incremental !== undefined) checkString(spec.incremental, 'incremental', issues, { ...CHECKPOINT_NAME, isText: true });
  if (mode === 'pull') {
    if (spec.server === undefined) issues.add('server', 'required in pull mode');
    else checkServer(spec.server, 'server', target, issues);
  } else {
    forbid(spec, 'server', '', 'only allowed in pull mode', issues);
  }
  if (spec.disks !== undefined && checkArray(spec.disks, 'disks', issues, 'must list at least one disk (omit it to back up every disk)')) {
    spec.disks.forEach((disk, index) => checkDisk(disk, `disks[${index}]`, mode, target, issues));
    checkNoDuplicateNames(spec.disks, 'disks', issues);
  }
  if (spec.extra !== undefined) {
    checkExtra(
      spec.extra,
      'extra',
      { target, modeledAttributes: ROOT_ATTRIBUTES, modeledElements: ROOT_ELEMENTS, outputOnly: BACKUP_OUTPUT_ONLY.root },
      issues,
    );
  }
  return issues.list;
}

/** Throws an `XmlValidationError` naming the first broken rule. */
export function validateBackupSpec(spec: unknown, options?: LibvirtVersionOptions): asserts spec is BackupSpec {
  const issues = new Issues();
  issues.list.push(...backupSpecIssues(spec, options));
  issues.throwIfAny();
}

function checkServer(server: unknown, path: string, target: InputTarget, issues: Issues): void {
  if (!checkObject(server, path, ['transport', 'tls', 'name', 'port', 'socket', 'fdgroup', 'extra'], issues)) return;
  const transport = server.transport ?? 'tcp';
  if (!checkEnum(transport, childPath(path, 'transport'), ['tcp', 'unix', 'fd'], issues)) return;
  if (server.tls !== undefined) checkEnum(server.tls, childPath(path, 'tls'), ['yes', 'no'], issues);
  const notWith = `not allowed with transport '${transport}'`;
  if (transport === 'tcp') {
    if (server.name === undefined) issues.add(childPath(path, 'name'), "required with transport 'tcp'");
    else checkHostName(server.name, childPath(path, 'name'), issues);
    if (server.port !== undefined) checkUnsigned(server.port, childPath(path, 'port'), issues, 65535);
    forbid(server, 'socket', path, notWith, issues);
    forbid(server, 'fdgroup', path, notWith, issues);
  } else if (transport === 'unix') {
    if (server.socket === undefined) issues.add(childPath(path, 'socket'), "required with transport 'unix'");
    else checkAbsolutePath(server.socket, childPath(path, 'socket'), issues);
    forbid(server, 'name', path, notWith, issues);
    forbid(server, 'port', path, notWith, issues);
    forbid(server, 'fdgroup', path, notWith, issues);
  } else {
    if (target.version < FD_TRANSPORT_SINCE) issues.add(childPath(path, 'transport'), "'fd' needs libvirt >= 11.3");
    if (server.fdgroup === undefined) issues.add(childPath(path, 'fdgroup'), "required with transport 'fd'");
    else checkString(server.fdgroup, childPath(path, 'fdgroup'), issues);
    forbid(server, 'name', path, notWith, issues);
    forbid(server, 'port', path, notWith, issues);
    forbid(server, 'socket', path, notWith, issues);
  }
  if (server.extra !== undefined) checkExtra(server.extra, childPath(path, 'extra'), { target, modeledAttributes: SERVER_ATTRIBUTES }, issues);
}

function checkDisk(disk: unknown, path: string, mode: 'push' | 'pull', target: InputTarget, issues: Issues): void {
  const keys = ['name', 'backup', 'type', 'backupmode', 'incremental', 'driver', 'index', 'extra', 'target', 'scratch', 'exportname', 'exportbitmap'];
  if (!checkObject(disk, path, keys, issues)) return;
  const at = (key: string): string => childPath(path, key);
  if (disk.name === undefined) issues.add(at('name'), 'required');
  else checkString(disk.name, at('name'), issues, { pattern: DISK_TARGET.pattern, patternText: `a disk target dev like vda (${DISK_TARGET.patternText})` });
  if (disk.backup !== undefined) checkEnum(disk.backup, at('backup'), ['yes', 'no'], issues);
  if (disk.type !== undefined) checkEnum(disk.type, at('type'), ['file', 'block'], issues);
  if (disk.backupmode !== undefined) checkEnum(disk.backupmode, at('backupmode'), ['full', 'incremental'], issues);
  if (disk.incremental !== undefined) {
    if (disk.backupmode === 'full') issues.add(at('incremental'), "not allowed with backupmode 'full'");
    else checkString(disk.incremental, at('incremental'), issues, CHECKPOINT_NAME);
  }
  if (disk.index !== undefined) issues.add(at('index'), outputOnlyRule(BACKUP_DISK_INDEX_SOURCE, target.call));

  const storageKey = mode === 'push' ? 'target' : 'scratch';
  const otherMode = mode === 'push' ? 'pull' : 'push';
  forbid(disk, mode === 'push' ? 'scratch' : 'target', path, `only allowed in ${otherMode} mode`, issues);
  if (mode === 'push') {
    forbid(disk, 'exportname', path, 'only allowed in pull mode', issues);
    forbid(disk, 'exportbitmap', path, 'only allowed in pull mode', issues);
  } else {
    if (disk.exportname !== undefined) checkString(disk.exportname, at('exportname'), issues);
    if (disk.exportbitmap !== undefined) checkString(disk.exportbitmap, at('exportbitmap'), issues);
  }

  if (disk.backup === 'no') {
    for (const key of ['type', 'driver', storageKey]) forbid(disk, key, path, "not allowed with backup 'no'", issues);
  } else {
    const storage = disk[storageKey];
    if (mode === 'push') {
      if (disk.type === undefined && target.version < PUSH_TYPE_OPTIONAL_SINCE) {
        issues.add(at('type'), "push disks need type 'file' or 'block' on libvirt < 11");
      }
    } else {
      // libvirt's pull grammar ties an explicit backup='yes' to a type.
      if (disk.type === undefined && disk.backup === 'yes') {
        issues.add(at('type'), "pull disks with backup 'yes' need type 'file' or 'block'");
      }
      if (disk.type === 'block' && storage === undefined) issues.add(at('scratch'), "required with type 'block'");
      if (disk.driver !== undefined && storage === undefined) issues.add(at('driver'), 'only allowed together with scratch');
    }
    if (storage !== undefined) checkStorage(storage, at(storageKey), disk.type === 'block' ? 'block' : 'file', disk.type === undefined, target, issues);
    if (disk.driver !== undefined) checkDriver(disk.driver, at('driver'), mode, target, issues);
  }
  if (disk.extra !== undefined) {
    checkExtra(
      disk.extra,
      at('extra'),
      { target, modeledAttributes: DISK_ATTRIBUTES, modeledElements: DISK_ELEMENTS, outputOnly: BACKUP_OUTPUT_ONLY.disk },
      issues,
    );
  }
}

function checkDriver(driver: unknown, path: string, mode: 'push' | 'pull', target: InputTarget, issues: Issues): void {
  if (!checkObject(driver, path, ['type', 'extra'], issues)) return;
  const typePath = childPath(path, 'type');
  if (driver.type === undefined) issues.add(typePath, 'required');
  else if (mode === 'pull') {
    if (driver.type !== 'qcow2') issues.add(typePath, "pull scratch must be 'qcow2'");
  } else checkEnum(driver.type, typePath, STORAGE_FORMATS, issues);
  if (driver.extra !== undefined) checkExtra(driver.extra, childPath(path, 'extra'), { target, modeledAttributes: ['type'] }, issues);
}

function checkStorage(storage: unknown, path: string, type: BackupDiskType, typeOmitted: boolean, target: InputTarget, issues: Issues): void {
  if (!checkObject(storage, path, ['file', 'dev', 'seclabels', 'encryption', 'extra'], issues)) return;
  const wanted = type === 'block' ? 'dev' : 'file';
  const unwanted = type === 'block' ? 'file' : 'dev';
  if (storage[unwanted] !== undefined) {
    issues.add(childPath(path, unwanted), typeOmitted ? "needs type 'block'" : `not allowed with type '${type}'`);
  }
  if (storage[wanted] === undefined) {
    if (storage[unwanted] === undefined) issues.add(childPath(path, wanted), `required with type '${type}'`);
  } else {
    checkAbsolutePath(storage[wanted], childPath(path, wanted), issues);
  }
  if (storage.seclabels !== undefined && checkArray(storage.seclabels, childPath(path, 'seclabels'), issues)) {
    storage.seclabels.forEach((label, index) => checkSeclabel(label, `${childPath(path, 'seclabels')}[${index}]`, target, issues));
  }
  if (storage.encryption !== undefined) checkEncryption(storage.encryption, childPath(path, 'encryption'), target, issues);
  if (storage.extra !== undefined) {
    const rules = { target, modeledAttributes: ['file', 'dev'], modeledElements: ['seclabel', 'encryption'], outputOnly: BACKUP_OUTPUT_ONLY.storage };
    checkExtra(storage.extra, childPath(path, 'extra'), rules, issues);
  }
}

function checkSeclabel(label: unknown, path: string, target: InputTarget, issues: Issues): void {
  if (!checkObject(label, path, ['model', 'relabel', 'labelskip', 'label', 'extra'], issues)) return;
  const at = (key: string): string => childPath(path, key);
  if (label.model !== undefined) checkString(label.model, at('model'), issues);
  if (label.relabel !== undefined) checkEnum(label.relabel, at('relabel'), ['yes', 'no'], issues);
  if (label.labelskip !== undefined) checkEnum(label.labelskip, at('labelskip'), ['yes'], issues);
  if (label.relabel === 'no') {
    forbid(label, 'labelskip', path, "not allowed with relabel 'no'", issues);
    forbid(label, 'label', path, "not allowed with relabel 'no'", issues);
  } else if (label.labelskip !== undefined) {
    forbid(label, 'relabel', path, 'not allowed with labelskip', issues);
    forbid(label, 'label', path, 'not allowed with labelskip', issues);
  } else if (label.label === undefined) {
    issues.add(at('label'), "required unless relabel is 'no' or labelskip is 'yes'");
  } else {
    checkString(label.label, at('label'), issues, { isText: true });
  }
  if (label.extra !== undefined) {
    checkExtra(label.extra, at('extra'), { target, modeledAttributes: ['model', 'relabel', 'labelskip'], modeledElements: ['label'] }, issues);
  }
}

function checkEncryption(encryption: unknown, path: string, target: InputTarget, issues: Issues): void {
  if (!checkObject(encryption, path, ['format', 'engine', 'secret', 'cipher', 'ivgen', 'extra'], issues)) return;
  const at = (key: string): string => childPath(path, key);
  checkEnum(encryption.format, at('format'), ['luks'], issues);
  if (encryption.engine !== undefined) checkEnum(encryption.engine, at('engine'), ['qemu'], issues);
  if (encryption.secret === undefined) issues.add(at('secret'), 'required');
  else checkSecret(encryption.secret, at('secret'), target, issues);
  if ((encryption.cipher === undefined) !== (encryption.ivgen === undefined)) {
    issues.add(at(encryption.cipher === undefined ? 'cipher' : 'ivgen'), 'cipher and ivgen go together');
  }
  if (encryption.cipher !== undefined && checkObject(encryption.cipher, at('cipher'), ['name', 'size', 'mode', 'hash', 'extra'], issues)) {
    const cipher = encryption.cipher;
    const cipherPath = at('cipher');
    checkString(cipher.name, childPath(cipherPath, 'name'), issues);
    checkUnsigned(cipher.size, childPath(cipherPath, 'size'), issues, UNSIGNED_INT_MAX);
    if ((cipher.mode === undefined) !== (cipher.hash === undefined)) {
      issues.add(childPath(cipherPath, cipher.mode === undefined ? 'mode' : 'hash'), 'mode and hash go together');
    }
    if (cipher.mode !== undefined) checkString(cipher.mode, childPath(cipherPath, 'mode'), issues);
    if (cipher.hash !== undefined) checkString(cipher.hash, childPath(cipherPath, 'hash'), issues);
    if (cipher.extra !== undefined)
      checkExtra(cipher.extra, childPath(cipherPath, 'extra'), { target, modeledAttributes: ['name', 'size', 'mode', 'hash'] }, issues);
  }
  if (encryption.ivgen !== undefined && checkObject(encryption.ivgen, at('ivgen'), ['name', 'hash', 'extra'], issues)) {
    const ivgen = encryption.ivgen;
    checkString(ivgen.name, childPath(at('ivgen'), 'name'), issues);
    if (ivgen.hash !== undefined) checkString(ivgen.hash, childPath(at('ivgen'), 'hash'), issues);
    if (ivgen.extra !== undefined) checkExtra(ivgen.extra, childPath(at('ivgen'), 'extra'), { target, modeledAttributes: ['name', 'hash'] }, issues);
  }
  if (encryption.extra !== undefined) {
    checkExtra(encryption.extra, at('extra'), { target, modeledAttributes: ['format', 'engine'], modeledElements: ['secret', 'cipher', 'ivgen'] }, issues);
  }
}

function checkSecret(secret: unknown, path: string, target: InputTarget, issues: Issues): void {
  if (!checkObject(secret, path, ['type', 'uuid', 'usage', 'extra'], issues)) return;
  checkEnum(secret.type, childPath(path, 'type'), ['passphrase'], issues);
  if ((secret.uuid === undefined) === (secret.usage === undefined)) {
    issues.add(path, 'needs exactly one of uuid and usage');
  }
  if (secret.uuid !== undefined) checkUuid(secret.uuid, childPath(path, 'uuid'), issues);
  if (secret.usage !== undefined) checkString(secret.usage, childPath(path, 'usage'), issues);
  if (secret.extra !== undefined) checkExtra(secret.extra, childPath(path, 'extra'), { target, modeledAttributes: ['type', 'uuid', 'usage'] }, issues);
}

// A name of its own so that backup-only options can be added without breaking callers.
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface BuildBackupOptions extends LibvirtVersionOptions {}

/** Builds `<domainbackup>` XML, after validating `spec`. */
export function buildBackupXml(spec: BackupSpec, options?: BuildBackupOptions): string {
  validateBackupSpec(spec, options);
  return writeBackupXml(spec);
}

/** Serialises without validating; tests use it to see what libvirt's schema says about invalid specs. */
export function writeBackupXml(spec: BackupSpec): string {
  const writer = new DocumentWriter('domainbackup');
  const root = writer.root;
  writer.setAttributes(root, [['mode', spec.mode]]);
  writer.textElement(root, 'incremental', spec.incremental);
  // Writes what is there, mode or not: validation has already refused what
  // does not belong, and tests feed invalid specs through here on purpose.
  const server = (spec as Partial<PullBackupSpec>).server;
  if (server !== undefined) writeServer(writer, root, server);
  if (spec.disks !== undefined) {
    const disks = writer.element(root, 'disks');
    for (const disk of spec.disks) writeDisk(writer, disks, disk);
  }
  writer.writeExtra(root, spec.extra);
  return writer.serialize();
}

function writeServer(writer: DocumentWriter, parent: Element, server: BackupServer): void {
  const element = writer.element(parent, 'server', [
    ['transport', server.transport],
    ['tls', server.tls],
    ['name', server.transport === 'tcp' || server.transport === undefined ? server.name : undefined],
    ['port', server.transport === 'tcp' || server.transport === undefined ? server.port : undefined],
    ['socket', server.transport === 'unix' ? server.socket : undefined],
    ['fdgroup', server.transport === 'fd' ? server.fdgroup : undefined],
  ]);
  writer.writeExtra(element, server.extra);
}

function writeDisk(writer: DocumentWriter, parent: Element, disk: PushBackupDisk | PullBackupDisk): void {
  const both = disk as PushBackupDisk & PullBackupDisk;
  const element = writer.element(parent, 'disk', [
    ['name', disk.name],
    ['backup', disk.backup],
    ['type', disk.type],
    ['backupmode', disk.backupmode],
    ['incremental', disk.incremental],
    ['exportname', both.exportname],
    ['exportbitmap', both.exportbitmap],
    ['index', disk.index],
  ]);
  if (disk.driver !== undefined) writer.writeExtra(writer.element(element, 'driver', [['type', disk.driver.type]]), disk.driver.extra);
  if (both.target !== undefined) writeStorage(writer, element, 'target', both.target);
  if (both.scratch !== undefined) writeStorage(writer, element, 'scratch', both.scratch);
  writer.writeExtra(element, disk.extra);
}

function writeStorage(writer: DocumentWriter, parent: Element, name: string, storage: BackupStorage): void {
  const element = writer.element(parent, name, [
    ['file', storage.file],
    ['dev', storage.dev],
  ]);
  for (const label of storage.seclabels ?? []) {
    const labelElement = writer.element(element, 'seclabel', [
      ['model', label.model],
      ['relabel', label.relabel],
      ['labelskip', label.labelskip],
    ]);
    writer.textElement(labelElement, 'label', label.label);
    writer.writeExtra(labelElement, label.extra);
  }
  if (storage.encryption !== undefined) writeEncryption(writer, element, storage.encryption);
  writer.writeExtra(element, storage.extra);
}

function writeEncryption(writer: DocumentWriter, parent: Element, encryption: BackupEncryption): void {
  const element = writer.element(parent, 'encryption', [
    ['format', encryption.format],
    ['engine', encryption.engine],
  ]);
  const { secret, cipher, ivgen } = encryption;
  writer.writeExtra(
    writer.element(element, 'secret', [
      ['type', secret.type],
      ['uuid', secret.uuid],
      ['usage', secret.usage],
    ]),
    secret.extra,
  );
  if (cipher !== undefined) {
    writer.writeExtra(
      writer.element(element, 'cipher', [
        ['name', cipher.name],
        ['size', cipher.size],
        ['mode', cipher.mode],
        ['hash', cipher.hash],
      ]),
      cipher.extra,
    );
  }
  if (ivgen !== undefined) {
    writer.writeExtra(
      writer.element(element, 'ivgen', [
        ['name', ivgen.name],
        ['hash', ivgen.hash],
      ]),
      ivgen.extra,
    );
  }
  writer.writeExtra(element, encryption.extra);
}

/** Parses `<domainbackup>` XML as libvirt writes or accepts it (a missing mode means push). */
export function parseBackupXml(xml: string): BackupSpec {
  const reader = new ElementReader(parseDocument(xml, 'domainbackup'), '');
  const mode = reader.enumAttribute('mode', ['push', 'pull'] as const) ?? 'push';
  const incremental = reader.childText('incremental');
  const disksElement = reader.child('disks');
  const disks =
    disksElement === undefined
      ? undefined
      : new ElementReader(disksElement, 'disks').children('disk').map((disk, index) => readDisk(disk, `disks[${index}]`, mode));
  let spec: BackupSpec;
  if (mode === 'pull') {
    const serverElement = reader.child('server');
    if (serverElement === undefined) throw new XmlParseError('server', 'required in pull mode');
    spec = { mode, ...(incremental === undefined ? {} : { incremental }), server: readServer(serverElement, 'server') };
  } else {
    spec = { mode, ...(incremental === undefined ? {} : { incremental }) };
  }
  if (disks !== undefined) spec.disks = disks as PushBackupDisk[] & PullBackupDisk[];
  const extra = reader.extra();
  if (extra !== undefined) spec.extra = extra;
  return spec;
}

function readServer(element: Element, path: string): BackupServer {
  const reader = new ElementReader(element, path);
  const transport = reader.enumAttribute('transport', ['tcp', 'unix', 'fd'] as const);
  const tls = reader.enumAttribute('tls', ['yes', 'no'] as const);
  let server: BackupServer;
  if (transport === 'unix') {
    server = { transport, socket: required(reader, 'socket') };
  } else if (transport === 'fd') {
    server = { transport, fdgroup: required(reader, 'fdgroup') };
  } else {
    const tcp: TcpBackupServer = { name: required(reader, 'name') };
    if (transport !== undefined) tcp.transport = transport;
    const port = reader.unsignedAttribute('port');
    if (port !== undefined) tcp.port = port;
    server = tcp.transport === undefined ? tcp : { transport: tcp.transport, ...tcp };
  }
  if (tls !== undefined) server.tls = tls;
  const extra = reader.extra();
  if (extra !== undefined) server.extra = extra;
  return server;
}

function required(reader: ElementReader, attribute: string): string {
  const value = reader.attribute(attribute);
  if (value === undefined) throw new XmlParseError(reader.fieldPath(attribute), 'missing');
  return value;
}

function readDisk(element: Element, path: string, mode: 'push' | 'pull'): PushBackupDisk | PullBackupDisk {
  const reader = new ElementReader(element, path);
  const disk: PullBackupDisk & PushBackupDisk = { name: required(reader, 'name') };
  const backup = reader.enumAttribute('backup', ['yes', 'no'] as const);
  if (backup !== undefined) disk.backup = backup;
  const type = reader.enumAttribute('type', ['file', 'block'] as const);
  if (type !== undefined) disk.type = type;
  const backupmode = reader.enumAttribute('backupmode', ['full', 'incremental'] as const);
  if (backupmode !== undefined) disk.backupmode = backupmode;
  const incremental = reader.attribute('incremental');
  if (incremental !== undefined) disk.incremental = incremental;
  if (mode === 'pull') {
    const exportname = reader.attribute('exportname');
    if (exportname !== undefined) disk.exportname = exportname;
    const exportbitmap = reader.attribute('exportbitmap');
    if (exportbitmap !== undefined) disk.exportbitmap = exportbitmap;
  }
  const index = reader.unsignedAttribute('index');
  if (index !== undefined) disk.index = index;
  const driver = reader.child('driver');
  if (driver !== undefined) {
    const driverReader = new ElementReader(driver, reader.fieldPath('driver'));
    const result: BackupDriver = { type: required(driverReader, 'type') };
    const extra = driverReader.extra();
    if (extra !== undefined) result.extra = extra;
    disk.driver = result;
  }
  const storageName = mode === 'pull' ? 'scratch' : 'target';
  const storage = reader.child(storageName);
  if (storage !== undefined) disk[storageName] = readStorage(storage, reader.fieldPath(storageName));
  const extra = reader.extra();
  if (extra !== undefined) disk.extra = extra;
  return disk;
}

function readStorage(element: Element, path: string): BackupStorage {
  const reader = new ElementReader(element, path);
  const storage: BackupStorage = {};
  const file = reader.attribute('file');
  if (file !== undefined) storage.file = file;
  const dev = reader.attribute('dev');
  if (dev !== undefined) storage.dev = dev;
  const labels = reader.children('seclabel');
  if (labels.length > 0) storage.seclabels = labels.map((label, index) => readSeclabel(label, `${reader.fieldPath('seclabels')}[${index}]`));
  const encryption = reader.child('encryption');
  if (encryption !== undefined) storage.encryption = readEncryption(encryption, reader.fieldPath('encryption'));
  const extra = reader.extra();
  if (extra !== undefined) storage.extra = extra;
  return storage;
}

function readSeclabel(element: Element, path: string): Seclabel {
  const reader = new ElementReader(element, path);
  const label: Seclabel = {};
  const model = reader.attribute('model');
  if (model !== undefined) label.model = model;
  const relabel = reader.enumAttribute('relabel', ['yes', 'no'] as const);
  if (relabel !== undefined) label.relabel = relabel;
  const labelskip = reader.enumAttribute('labelskip', ['yes', 'no'] as const);
  if (labelskip !== undefined) label.labelskip = labelskip;
  const text = reader.childText('label');
  if (text !== undefined) label.label = text;
  const extra = reader.extra();
  if (extra !== undefined) label.extra = extra;
  return label;
}

function readEncryption(element: Element, path: string): BackupEncryption {
  const reader = new ElementReader(element, path);
  const format = reader.enumAttribute('format', ['luks'] as const);
  if (format === undefined) throw new XmlParseError(reader.fieldPath('format'), 'missing');
  const engine = reader.enumAttribute('engine', ['qemu'] as const);
  const secretElement = reader.child('secret');
  if (secretElement === undefined) throw new XmlParseError(reader.fieldPath('secret'), 'missing');
  const secretReader = new ElementReader(secretElement, reader.fieldPath('secret'));
  const secretType = secretReader.enumAttribute('type', ['passphrase'] as const);
  if (secretType === undefined) throw new XmlParseError(secretReader.fieldPath('type'), 'missing');
  const secret: EncryptionSecret = { type: secretType };
  const uuid = secretReader.attribute('uuid');
  if (uuid !== undefined) secret.uuid = uuid;
  const usage = secretReader.attribute('usage');
  if (usage !== undefined) secret.usage = usage;
  const secretExtra = secretReader.extra();
  if (secretExtra !== undefined) secret.extra = secretExtra;

  const encryption: BackupEncryption = { format, secret };
  if (engine !== undefined) encryption.engine = engine;
  const cipherElement = reader.child('cipher');
  if (cipherElement !== undefined) {
    const cipherReader = new ElementReader(cipherElement, reader.fieldPath('cipher'));
    const size = cipherReader.unsignedAttribute('size');
    if (size === undefined) throw new XmlParseError(cipherReader.fieldPath('size'), 'missing');
    const cipher: EncryptionCipher = { name: required(cipherReader, 'name'), size };
    const mode = cipherReader.attribute('mode');
    if (mode !== undefined) cipher.mode = mode;
    const hash = cipherReader.attribute('hash');
    if (hash !== undefined) cipher.hash = hash;
    const extra = cipherReader.extra();
    if (extra !== undefined) cipher.extra = extra;
    encryption.cipher = cipher;
  }
  const ivgenElement = reader.child('ivgen');
  if (ivgenElement !== undefined) {
    const ivgenReader = new ElementReader(ivgenElement, reader.fieldPath('ivgen'));
    const ivgen: EncryptionIvgen = { name: required(ivgenReader, 'name') };
    const hash = ivgenReader.attribute('hash');
    if (hash !== undefined) ivgen.hash = hash;
    const extra = ivgenReader.extra();
    if (extra !== undefined) ivgen.extra = extra;
    encryption.ivgen = ivgen;
  }
  const extra = reader.extra();
  if (extra !== undefined) encryption.extra = extra;
  return encryption;
}
