import { ErrorCode, ErrorDomain, ErrorLevel } from './constants.js';

/** The fields libvirt's virError carries, as the addon captured them. */
export interface LibvirtErrorInfo {
  code: number;
  /**
   * libvirt's `virError.domain`: the part of libvirt that raised the error
   * (`ErrorDomain`, `VIR_FROM_*`), not a virtual machine.
   */
  domain: number;
  level: number;
  message: string;
  /** The libvirt function that failed, e.g. `'virDomainLookupByName'`. */
  operation?: string | null;
  str1: string | null;
  str2: string | null;
  str3: string | null;
  int1: number;
  int2: number;
}

/**
 * An error reported by libvirt, with its code kept so callers can match on it:
 * `if (err instanceof LibvirtError && err.codeName === 'VIR_ERR_NO_DOMAIN')`.
 *
 * Errors from the addon carry the caller's stack (recorded when the call was
 * made, not when it failed) and name the libvirt function in `operation`, and in
 * the message when libvirt's own text does not mention it.
 */
export class LibvirtError extends Error {
  /** libvirt's error number (`ErrorCode`). */
  readonly code: number;
  /** The constant's name, e.g. `'VIR_ERR_NO_DOMAIN'`. */
  readonly codeName: string;
  /**
   * Which part of libvirt raised it (`ErrorDomain`, `VIR_FROM_*`): libvirt calls
   * this the error's domain. It is not a virtual machine; `source` is the same.
   */
  readonly domain: number;
  /** The `domain` constant's name, e.g. `'VIR_FROM_QEMU'`; `sourceName` is the same. */
  readonly domainName: string;
  /** Which part of libvirt raised it (`ErrorDomain`): `domain` under a name that cannot be read as a VM. */
  readonly source: number;
  /** `source`'s constant name, e.g. `'VIR_FROM_QEMU'`. */
  readonly sourceName: string;
  /** The libvirt function that failed (`'virDomainLookupByName'`), or null when unknown. */
  readonly operation: string | null;
  /** `ErrorLevel.WARNING` or `ErrorLevel.ERROR`. */
  readonly level: number;
  readonly str1: string | null;
  readonly str2: string | null;
  readonly str3: string | null;
  readonly int1: number;
  readonly int2: number;

  constructor(info: LibvirtErrorInfo) {
    super(info.message);
    this.name = 'LibvirtError';
    this.code = info.code;
    // Codes added by a newer libvirt than the one constants.ts was generated from
    // still get a stable, recognisable name.
    this.codeName = ErrorCode[info.code] ?? `VIR_ERR_UNKNOWN_${info.code}`;
    this.domain = info.domain;
    this.domainName = ErrorDomain[info.domain] ?? `VIR_FROM_UNKNOWN_${info.domain}`;
    this.source = this.domain;
    this.sourceName = this.domainName;
    this.operation = info.operation ?? null;
    this.level = info.level;
    this.str1 = info.str1;
    this.str2 = info.str2;
    this.str3 = info.str3;
    this.int1 = info.int1;
    this.int2 = info.int2;
  }

  /** The `ErrorLevel` name of `level` (`'ERROR'`, `'WARNING'`). */
  get levelName(): string {
    return ErrorLevel[this.level] ?? String(this.level);
  }
}
