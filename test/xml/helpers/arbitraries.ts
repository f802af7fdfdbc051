import fc from 'fast-check';
import { DOMParser, XMLSerializer } from '@xmldom/xmldom';
import { parseDomainXml } from '../../../src/xml/index.js';
import type {
  BackupEncryption,
  BackupServer,
  BackupSpec,
  BackupStorage,
  CheckpointDisk,
  CheckpointSpec,
  DomainSummary,
  PullBackupDisk,
  PushBackupDisk,
  Seclabel,
} from '../../../src/xml/index.js';

/** Characters that break naive XML templates, and some that only break naive encoders. */
const TRICKY = ['&', '<', '>', '"', "'", ']]>', '&amp;', 'é', 'ß', '日本', '🙂', '\u2028', '\u0085', '\uFFFD', ' '];
const PLAIN = 'abcXYZ0189_-.'.split('');

function textOf(extra: readonly string[], minLength = 1): fc.Arbitrary<string> {
  return fc.array(fc.oneof(fc.constantFrom(...TRICKY, ...extra), fc.constantFrom(...PLAIN)), { minLength, maxLength: 10 }).map((parts) => parts.join(''));
}

/** Any text XML can carry in an attribute (line breaks and tabs included). */
export const attributeText = textOf(['\n', '\t']);
/** Text without line breaks: what the schema's `.+` patterns accept. */
export const lineText = textOf(['/', '\t']);
export const absolutePath = lineText.map((rest) => `/${rest}`);
/** Element text: no carriage returns, which XML would turn into line feeds. */
export const elementText = textOf(['\n', '\t'], 0);

export const checkpointName = fc
  .tuple(fc.constantFrom(...'aZ09_-'.split('')), fc.array(fc.constantFrom(...'aZ09_-.'.split('')), { maxLength: 12 }))
  .map(([first, rest]) => first + rest.join(''));

export const diskTarget = fc
  .tuple(fc.constantFrom('vd', 'sd', 'hd', 'xvd', 'fd', 'ubd', 'ioemu:hd'), fc.array(fc.constantFrom(...'abcz09_Q'.split('')), { minLength: 1, maxLength: 4 }))
  .map(([prefix, rest]) => prefix + rest.join(''));

const unsignedLong = fc.oneof(fc.constantFrom(0, 1, Number.MAX_SAFE_INTEGER), fc.nat());
const uuid = fc.uuid();

const DOMAIN_TEMPLATE = `<domain type="kvm"><name>placeholder</name><uuid>00000000-0000-4000-8000-000000000000</uuid><memory unit="KiB">65536</memory><vcpu>1</vcpu><os><type arch="x86_64">hvm</type></os><devices><disk type="file" device="disk"><driver name="qemu" type="qcow2"/><source file="/placeholder"/><target dev="vda" bus="virtio"/></disk></devices></domain>`;

/** A valid embedded domain whose name, uuid and source path are generated, edited through the DOM. */
export const embeddedDomain: fc.Arbitrary<DomainSummary> = fc.record({ name: lineText, uuid, file: absolutePath }).map(({ name, uuid, file }) => {
  const document = new DOMParser().parseFromString(DOMAIN_TEMPLATE, 'text/xml');
  const root = document.documentElement!;
  root.getElementsByTagName('name').item(0)!.firstChild!.nodeValue = name;
  root.getElementsByTagName('uuid').item(0)!.firstChild!.nodeValue = uuid;
  root.getElementsByTagName('source').item(0)!.setAttribute('file', file);
  return parseDomainXml(new XMLSerializer().serializeToString(document));
});

const checkpointDisk: fc.Arbitrary<CheckpointDisk> = fc.oneof(
  fc.record({ name: fc.oneof(diskTarget, absolutePath), checkpoint: fc.constant('no' as const) }),
  fc.record(
    {
      name: fc.oneof(diskTarget, absolutePath),
      checkpoint: fc.constant('bitmap' as const),
      bitmap: attributeText,
      size: unsignedLong,
    },
    { requiredKeys: ['name'] },
  ),
);

export const checkpointSpec: fc.Arbitrary<CheckpointSpec> = fc.record(
  {
    name: checkpointName,
    description: elementText,
    creationTime: unsignedLong,
    parent: checkpointName,
    disks: fc.uniqueArray(checkpointDisk, { minLength: 1, maxLength: 4, selector: (disk) => disk.name }),
    domain: embeddedDomain,
  },
  { requiredKeys: [] },
);

const seclabel: fc.Arbitrary<Seclabel> = fc.oneof(
  fc.record({ model: lineText, relabel: fc.constant('no' as const) }, { requiredKeys: ['relabel'] }),
  fc.record({ model: lineText, labelskip: fc.constant('yes' as const) }, { requiredKeys: ['labelskip'] }),
  fc.record({ model: lineText, relabel: fc.constant('yes' as const), label: elementText.filter((text) => text !== '') }, { requiredKeys: ['label'] }),
);

const encryption: fc.Arbitrary<BackupEncryption> = fc
  .record({
    engine: fc.option(fc.constant('qemu' as const), { nil: undefined }),
    secret: fc.oneof(
      uuid.map((value) => ({ type: 'passphrase' as const, uuid: value })),
      attributeText.map((value) => ({ type: 'passphrase' as const, usage: value })),
    ),
    cipherAndIvgen: fc.option(
      fc.record({
        cipher: fc.oneof(
          fc.record({ name: attributeText, size: fc.nat({ max: 4_294_967_295 }) }),
          fc.record({ name: attributeText, size: fc.nat({ max: 4_294_967_295 }), mode: attributeText, hash: attributeText }),
        ),
        ivgen: fc.record({ name: attributeText, hash: attributeText }, { requiredKeys: ['name'] }),
      }),
      { nil: undefined },
    ),
  })
  .map(({ engine, secret, cipherAndIvgen }) => ({
    format: 'luks' as const,
    ...(engine === undefined ? {} : { engine }),
    secret,
    ...(cipherAndIvgen ?? {}),
  }));

function storage(kind: 'file' | 'dev'): fc.Arbitrary<BackupStorage> {
  return fc.record(
    {
      [kind]: absolutePath,
      seclabels: fc.array(seclabel, { minLength: 1, maxLength: 2 }),
      encryption,
    },
    { requiredKeys: [kind] },
  ) as fc.Arbitrary<BackupStorage>;
}

const diskMode = fc.oneof(
  fc.constant({}),
  fc.constant({ backupmode: 'full' as const }),
  fc.record({ backupmode: fc.constant('incremental' as const), incremental: checkpointName }, { requiredKeys: [] }),
);

const STORAGE_FORMATS = [
  'raw',
  'dir',
  'bochs',
  'cloop',
  'dmg',
  'iso',
  'vpc',
  'vdi',
  'fat',
  'vhd',
  'ploop',
  'luks',
  'cow',
  'qcow',
  'qcow2',
  'qed',
  'vmdk',
] as const;

const pushDisk: fc.Arbitrary<PushBackupDisk> = fc
  .tuple(
    diskTarget,
    diskMode,
    fc.oneof(
      fc.constant({ backup: 'no' as const }),
      fc.record(
        {
          backup: fc.constant('yes' as const),
          type: fc.constant('file' as const),
          target: storage('file'),
          driver: fc.record({ type: fc.constantFrom(...STORAGE_FORMATS) }),
        },
        { requiredKeys: ['type'] },
      ),
      fc.record(
        {
          backup: fc.constant('yes' as const),
          type: fc.constant('block' as const),
          target: storage('dev'),
          driver: fc.record({ type: fc.constantFrom(...STORAGE_FORMATS) }),
        },
        { requiredKeys: ['type'] },
      ),
    ),
  )
  .map(([name, mode, rest]) => ({ name, ...rest, ...mode }) as PushBackupDisk);

const pullExport = fc.record({ exportname: attributeText, exportbitmap: attributeText }, { requiredKeys: [] });
const scratchWithDriver = (kind: 'file' | 'dev') =>
  fc.record({ scratch: storage(kind), driver: fc.constant({ type: 'qcow2' }) }, { requiredKeys: ['scratch'] });

const pullDisk: fc.Arbitrary<PullBackupDisk> = fc
  .tuple(
    diskTarget,
    diskMode,
    pullExport,
    fc.oneof(
      fc.constant({ backup: 'no' as const }),
      fc.constant({}),
      scratchWithDriver('file'),
      fc
        .tuple(fc.record({ backup: fc.constant('yes' as const) }, { requiredKeys: [] }), fc.option(scratchWithDriver('file'), { nil: undefined }))
        .map(([backup, scratch]) => ({ ...backup, type: 'file' as const, ...(scratch ?? {}) })),
      fc.tuple(fc.record({ backup: fc.constant('yes' as const) }, { requiredKeys: [] }), scratchWithDriver('dev')).map(([backup, scratch]) => ({
        ...backup,
        type: 'block' as const,
        ...scratch,
      })),
    ),
  )
  .map(([name, mode, exports, rest]) => ({ name, ...rest, ...mode, ...exports }) as PullBackupDisk);

const octet = fc.nat({ max: 255 });
const hostName = fc.oneof(
  fc.array(fc.constantFrom(...'abz09.-'.split('')), { minLength: 1, maxLength: 12 }).map((chars) => chars.join('')),
  fc.tuple(octet, octet, octet, octet).map((parts) => parts.join('.')),
  fc.constantFrom('::1', '::', 'fe80::1', '2001:db8::8a2e:370:7334', '2001:0db8:0000:0000:0000:ff00:0042:8329', '::ffff:192.0.2.1'),
);

const tls = fc.constantFrom('yes' as const, 'no' as const);
export const server: fc.Arbitrary<BackupServer> = fc.oneof(
  fc.record({ transport: fc.constant('tcp' as const), name: hostName, port: fc.nat({ max: 65535 }), tls }, { requiredKeys: ['name'] }),
  fc.record({ transport: fc.constant('unix' as const), socket: absolutePath, tls }, { requiredKeys: ['transport', 'socket'] }),
);

export const pushBackupSpec = fc.record(
  {
    mode: fc.constant('push' as const),
    incremental: checkpointName,
    disks: fc.uniqueArray(pushDisk, { minLength: 1, maxLength: 4, selector: (disk) => disk.name }),
  },
  { requiredKeys: ['mode'] },
);

export const pullBackupSpec = fc.record(
  {
    mode: fc.constant('pull' as const),
    incremental: checkpointName,
    server,
    disks: fc.uniqueArray(pullDisk, { minLength: 1, maxLength: 4, selector: (disk) => disk.name }),
  },
  { requiredKeys: ['mode', 'server'] },
);

/** Specs libvirt 9.0's schema accepts. */
export const backupSpec: fc.Arbitrary<BackupSpec> = fc.oneof(pushBackupSpec, pullBackupSpec);

/** The same, with the output-only `index` on some disks, as backupGetXMLDesc reports them (the builder refuses it). */
export const backupSpecWithIndex: fc.Arbitrary<BackupSpec> = fc
  .tuple(backupSpec, fc.array(fc.option(fc.nat({ max: 4_294_967_295 }), { nil: undefined }), { minLength: 4, maxLength: 4 }))
  .map(([spec, indexes]) => {
    const disks = spec.disks?.map((disk, position) => (indexes[position] === undefined ? disk : { ...disk, index: indexes[position] }));
    return (disks === undefined ? spec : { ...spec, disks }) as BackupSpec;
  });

/**
 * Unknown content as a newer libvirt might write it, in the canonical form
 * our parser returns. Names libvirt writes only in output (`state`,
 * `privateData`) are left out: the builders refuse those at any version.
 */
export const extra = fc
  .record(
    {
      attributes: fc.dictionary(fc.constantFrom('future-attr', 'x_y', 'newer'), attributeText, { minKeys: 1 }),
      elements: fc.array(
        fc
          .record({ name: fc.constantFrom('futureThing', 'z', 'newerElement'), attribute: attributeText, text: elementText })
          .map(({ name, attribute, text }) => {
            const document = new DOMParser().parseFromString('<holder/>', 'text/xml');
            const element = document.createElement(name);
            element.setAttribute('value', attribute);
            if (text !== '') element.appendChild(document.createTextNode(text));
            return new XMLSerializer().serializeToString(element);
          }),
        { minLength: 1, maxLength: 2 },
      ),
    },
    { requiredKeys: [] },
  )
  .filter((value) => Object.keys(value).length > 0);
