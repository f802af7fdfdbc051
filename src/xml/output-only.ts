/**
 * What libvirt writes when it reports a backup or checkpoint but refuses when
 * it is given one. The parsers read these (they are part of what libvirt
 * reports); the builders refuse them, naming the field, because parsing
 * output and building input are different contracts. Found in libvirt's own
 * test files (`backup-pull-internal-invalid`, `internal-active-invalid`) and
 * in what a running 9.0 daemon returns.
 */

/** The libvirt call a document is built for, named in refusals. */
export type InputCall = 'virDomainBackupBegin' | 'virDomainCheckpointCreateXML';

/** Names libvirt writes only in output, each with where it comes from. */
export interface OutputOnlyNames {
  readonly attributes?: Readonly<Record<string, string>>;
  readonly elements?: Readonly<Record<string, string>>;
}

const STATUS_XML = "libvirt's status XML";

export const BACKUP_OUTPUT_ONLY = {
  /** `<domainbackup>`: TLS object aliases the daemon keeps for itself. */
  root: { elements: { privateData: STATUS_XML } },
  /** `<disk>`: the job state per disk; `index` is also a typed field, see `BACKUP_DISK_INDEX_SOURCE`. */
  disk: { attributes: { state: STATUS_XML, index: 'backupGetXMLDesc reports it' } },
  /** `<target>` / `<scratch>`: QEMU node names of the image. */
  storage: { elements: { privateData: STATUS_XML } },
} as const satisfies Record<string, OutputOnlyNames>;

export const CHECKPOINT_OUTPUT_ONLY = {
  /** `<domaincheckpoint>`: the current-checkpoint marker of libvirt's own checkpoint metadata. */
  root: { elements: { active: "libvirt's internal checkpoint metadata" } },
} as const satisfies Record<string, OutputOnlyNames>;

/** `disks[i].index` in a backup: the node index of the scratch or target image. */
export const BACKUP_DISK_INDEX_SOURCE = BACKUP_OUTPUT_ONLY.disk.attributes.index;

export function outputOnlyRule(source: string, call: InputCall): string {
  return `output-only (${source}), libvirt refuses it in ${call} input`;
}
