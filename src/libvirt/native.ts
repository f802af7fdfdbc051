// Loads the C++ addon and declares what it exports. Everything else in src/ goes
// through these declarations; src/xml and src/nbd never import this file.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

import { LibvirtError } from './errors.js';

export interface NativeConnection {
  close(): Promise<void>;
  isClosed(): boolean;
  getLibVersion(): Promise<number>;
  getVersion(): Promise<number>;
  getHostname(): Promise<string>;
  getURI(): Promise<string>;
  getCapabilities(): Promise<string>;
  getDomainCapabilities(emulatorbin: string | null, arch: string | null, machine: string | null, virttype: string | null, flags: number): Promise<string>;
  isAlive(): Promise<boolean>;
  listAllDomains(flags: number): Promise<NativeDomain[]>;
  lookupDomainByName(name: string): Promise<NativeDomain>;
  lookupDomainByUUID(uuid: string): Promise<NativeDomain>;
  defineDomain(xml: string, flags: number): Promise<NativeDomain>;
  createDomain(xml: string, flags: number): Promise<NativeDomain>;
  /**
   * Once per connection, before any registration: every event of every kind
   * registered on this connection reaches `handler`, in the order libvirt
   * dispatched them (one channel per connection).
   */
  setEventHandler(handler: (event: NativeEvent) => void): void;
  /** Resolves with libvirt's callback id. */
  registerDomainEvent(eventId: number): Promise<number>;
  deregisterDomainEvent(callbackId: number): Promise<void>;
  registerCloseCallback(): Promise<void>;
  unregisterCloseCallback(): Promise<void>;
  /** Resolves false when libvirt says keepalive does not apply (virConnectSetKeepAlive returned 1). */
  setKeepAlive(intervalSeconds: number, count: number): Promise<boolean>;
  lookupStoragePoolByName(name: string): Promise<NativeStoragePool>;
  /** A transient pool, started at once (virStoragePoolCreateXML). */
  createStoragePool(xml: string, flags: number): Promise<NativeStoragePool>;
  defineStoragePool(xml: string, flags: number): Promise<NativeStoragePool>;
  listAllStoragePools(flags: number): Promise<NativeStoragePool[]>;
  /** virStreamNew, answered locally; blocking streams only (StreamFlags.NONBLOCK is refused). */
  newStream(flags: number): NativeStream;
}

export interface NativeStoragePool {
  getName(): string;
  getUUIDString(): string;
  getXMLDesc(flags: number): Promise<string>;
  getInfo(): Promise<{ state: number; capacity: number; allocation: number; available: number }>;
  isActive(): Promise<boolean>;
  isPersistent(): Promise<boolean>;
  refresh(flags: number): Promise<void>;
  /** virStoragePoolCreate: starts a defined pool. */
  start(flags: number): Promise<void>;
  destroy(): Promise<void>;
  undefine(): Promise<void>;
  createVolume(xml: string, flags: number): Promise<NativeStorageVolume>;
  lookupVolumeByName(name: string): Promise<NativeStorageVolume>;
  listAllVolumes(flags: number): Promise<NativeStorageVolume[]>;
}

export interface NativeStorageVolume {
  getName(): string;
  getKey(): string;
  getPool(): NativeStoragePool;
  getPath(): Promise<string>;
  getInfo(): Promise<{ type: number; capacity: number; allocation: number }>;
  getXMLDesc(flags: number): Promise<string>;
  delete(flags: number): Promise<void>;
  /** Attaches `stream` to the volume's bytes from `offset` (`length` 0: to the end). */
  upload(stream: NativeStream, offset: number, length: number, flags: number): Promise<void>;
  download(stream: NativeStream, offset: number, length: number, flags: number): Promise<void>;
}

/**
 * A blocking libvirt stream whose calls run on worker threads. One call at a time:
 * the caller waits for each to settle before the next (binding/stream.h).
 */
export interface NativeStream {
  /** Sends every byte of `buffers`, which must not change until it settles; resolves with the count. */
  send(buffers: readonly Uint8Array[]): Promise<number>;
  sendHole(length: number, flags: number): Promise<void>;
  /**
   * Fills `buffer` from its start until it is full, the stream ends (`end`), or, with
   * `StreamRecvFlags.STOP_AT_HOLE`, a hole of `hole` bytes follows the `bytes` received.
   */
  recv(buffer: Uint8Array, flags: number): Promise<{ bytes: number; hole: number; end: boolean }>;
  finish(): Promise<void>;
  abort(): Promise<void>;
}

/** One libvirt typed parameter's value; repeated parameters become arrays. */
export type TypedParameterValue = number | bigint | boolean | string | Array<number | bigint | boolean | string>;
/** libvirt typed parameters (job statistics, event details) by name. */
export type TypedParameters = Record<string, TypedParameterValue>;

/** One event from a connection's channel, by kind. */
export type NativeEvent =
  | { kind: 'lifecycle'; domain: NativeDomain; event: number; detail: number }
  | { kind: 'block-job'; domain: NativeDomain; disk: string; type: number; status: number }
  | { kind: 'job-completed'; domain: NativeDomain; params: TypedParameters }
  | { kind: 'reboot'; domain: NativeDomain }
  | { kind: 'close'; reason: number };

export interface NativeJobInfo {
  type: number;
  timeElapsed: number;
  timeRemaining: number;
  dataTotal: number;
  dataProcessed: number;
  dataRemaining: number;
  memTotal: number;
  memProcessed: number;
  memRemaining: number;
  fileTotal: number;
  fileProcessed: number;
  fileRemaining: number;
}

export interface NativeCheckpoint {
  getName(): string;
  getDomain(): NativeDomain;
  getXMLDesc(flags: number): Promise<string>;
  getParent(): Promise<NativeCheckpoint | null>;
  listAllChildren(flags: number): Promise<NativeCheckpoint[]>;
  delete(flags: number): Promise<void>;
}

export interface NativeDomain {
  getName(): string;
  getUUIDString(): string;
  getId(): Promise<number | null>;
  getXMLDesc(flags: number): Promise<string>;
  getState(): Promise<{ state: number; reason: number }>;
  isActive(): Promise<boolean>;
  isPersistent(): Promise<boolean>;
  start(flags: number): Promise<void>;
  shutdown(flags: number): Promise<void>;
  destroy(flags: number): Promise<void>;
  undefine(flags: number): Promise<void>;
  qemuMonitorCommand(command: string, flags: number): Promise<string>;
  createCheckpoint(xml: string, flags: number): Promise<NativeCheckpoint>;
  listAllCheckpoints(flags: number): Promise<NativeCheckpoint[]>;
  lookupCheckpointByName(name: string): Promise<NativeCheckpoint>;
  backupBegin(backupXml: string, checkpointXml: string | null, flags: number): Promise<void>;
  backupGetXMLDesc(flags: number): Promise<string>;
  abortJob(): Promise<void>;
  getJobInfo(): Promise<NativeJobInfo>;
  getJobStats(flags: number): Promise<{ type: number; params: TypedParameters }>;
  /** `params` are typed parameters as `typedParamsRoundTrip` takes them (`{ type, value }`). */
  blockCopy(disk: string, destinationXml: string, params: Record<string, unknown> | null, flags: number): Promise<void>;
  blockJobAbort(disk: string, flags: number): Promise<void>;
  /** null when the disk has no block job. */
  getBlockJobInfo(disk: string, flags: number): Promise<{ type: number; bandwidth: number; cur: number; end: number } | null>;
  blockJobSetSpeed(disk: string, bandwidth: number, flags: number): Promise<void>;
  /** Empty or null `mountpoints`: every file system. Resolves with how many were frozen. */
  fsFreeze(mountpoints: readonly string[] | null, flags: number): Promise<number>;
  /** Resolves with how many file systems were thawed. */
  fsThaw(mountpoints: readonly string[] | null, flags: number): Promise<number>;
  getFSInfo(flags: number): Promise<Array<{ mountpoint: string; name: string; fstype: string; devAliases: string[] }>>;
}

/** One libvirt credential request, as the addon hands it to `onCredentials`. */
export interface NativeCredentialRequest {
  /** `CredentialType` (VIR_CRED_*). */
  type: number;
  prompt: string;
  challenge: string | null;
  defaultResult: string | null;
}

/**
 * Receives a batch of requests while libvirt waits inside virConnectOpenAuth (on a call
 * thread); `respond` once with one answer per request (null: none, libvirt's default if
 * it has one), or with null to refuse them all. Throwing refuses them too.
 */
export type NativeCredentialHandler = (requests: NativeCredentialRequest[], respond: (answers: ReadonlyArray<string | null> | null) => void) => void;

/** A connection attempt: its outcome, and a way to give up on it (see binding/connection_open.h). */
export interface NativeConnectionOpening {
  readonly promise: Promise<NativeConnection>;
  /**
   * Refuses every credential request from now on, and stops the attempt from keeping
   * the event loop alive; a connection that still opens is closed by the addon.
   */
  abandon(): void;
}

export interface NativeAddon {
  /** virConnectOpenAuth, refusing any credential request, without a time limit. */
  open(uri: string | null, flags: number): Promise<NativeConnection>;
  /** `timeoutMs` bounds each wait for `onCredentials`' answers (0: unbounded). */
  openConnection(uri: string | null, flags: number, onCredentials: NativeCredentialHandler | null, timeoutMs: number): NativeConnectionOpening;
  ConnectionOpening: abstract new () => NativeConnectionOpening;
  setErrorClass(errorClass: typeof LibvirtError): void;
  getLibraryVersion(): number;
  getCallTuning(): NativeCallTuning;
  /** Unset fields keep their value; returns the settings now in force. */
  setCallTuning(tuning: Partial<NativeCallTuning>): NativeCallTuning;
  /** Test hook: JS -> libvirt typed parameters -> JS. Values may be `{ type, value }`. */
  typedParamsRoundTrip(params: Record<string, unknown>): TypedParameters;
  Connection: abstract new () => NativeConnection;
  Domain: abstract new () => NativeDomain;
  Checkpoint: abstract new () => NativeCheckpoint;
  StoragePool: abstract new () => NativeStoragePool;
  StorageVolume: abstract new () => NativeStorageVolume;
  Stream: abstract new () => NativeStream;
  /** XXH3-128 of the bytes passed to `update()`, in order; `digest()` once, as `xxhsum -H2` prints it. */
  Xxh128: new () => NativeXxh128;
  /** Writes a file front to back on worker threads, checksumming in issue order; see binding/file_writer.h. */
  FileWriter: new (fd: number) => NativeFileWriter;
  /**
   * zstd frames of qcow2 clusters at `level`, compressed on the thread pool into `output`,
   * one after the other; resolves with each frame's length, 0 for a cluster whose frame
   * would not be smaller than the cluster. See binding/zstd_clusters.h.
   */
  zstdCompressClusters(clusters: readonly Uint8Array[], level: number, output: Uint8Array): Promise<number[]>;
  /** The cluster of `clusterSize` bytes a zstd frame (perhaps followed by other bytes) holds. */
  zstdDecompressCluster(frame: Uint8Array, clusterSize: number): Promise<Buffer>;
  /** flock(fd, LOCK_EX | LOCK_NB): true when taken, false when another open file holds it. */
  tryLockFile(fd: number): boolean;
  /** A thread that ends the process with `_exit(code)` unless it has exited within `ms`; see binding/exit_watchdog.h. */
  armExitWatchdog(code: number, ms: number): void;
  /** `bytes` (rounded up to 2 MiB) of memory on a 2 MiB boundary, advised for transparent huge pages; see binding/huge_page_memory.h. */
  hugePageMemory(bytes: number): ArrayBuffer;
  /** TLS of a connected socket on GnuTLS threads, plain text over a local socket pair; see binding/tls_relay.h. */
  startTlsRelay(fd: number, options: NativeTlsRelayOptions): { promise: Promise<number>; cancel(): void };
  /** Test hook: the call dispatcher's policy (binding/call_policy.h) on a clock the caller sets. */
  CallPolicyProbe: new () => NativeCallPolicyProbe;
  /** Test hook: the dispatcher's rule for how long a waiting thread polls (binding/spin_governor.h). */
  SpinGovernorProbe: new () => NativeSpinGovernorProbe;
}

/** The handshake a TLS relay runs: PEM texts, the name to verify, SNI, and its time limit. */
export interface NativeTlsRelayOptions {
  ca?: string | Uint8Array;
  cert?: string | Uint8Array;
  key?: string | Uint8Array;
  verifyName?: string;
  serverName?: string;
  verify: boolean;
  timeoutMs: number;
}

/** What the dispatcher's threads should do about a call: start it, look again at `at`, or nothing yet. */
export type NativeCallWake = { wake: 'now' } | { wake: 'at'; at: number } | { wake: 'none' };

/** Calls and lanes are numbers (lane 0: none); times are microseconds on the probe's own clock. */
export interface NativeCallPolicyProbe {
  enqueue(call: number, lane: number, now: number): NativeCallWake;
  /** The call to start now, if any; `nextReady` is when a full lane frees a slot. */
  take(now: number): ({ call: number; lane: number; runId: number; next: NativeCallWake } | { call: null }) & {
    nextReady: number | null;
  };
  finished(lane: number, runId: number, now: number): void;
  queued(): number;
}

/** Microseconds; each call says how the last poll went. */
export interface NativeSpinGovernorProbe {
  /** How long the next wait may poll, given the most allowed. */
  window(setting: number): number;
  found(): void;
  ranOut(): void;
  contended(): void;
}

export interface NativeCallTuning {
  maxThreads: number;
  busyPollMicroseconds: number;
}

export interface NativeFileWriter {
  /** pwritev of `buffers` at `position`; they must not change until the promise settles. */
  write(buffers: readonly Uint8Array[], position: number): Promise<void>;
  /** `length` zero bytes taken into the checksum in issue order, nothing written: a hole later writes leave behind. */
  hashHole(length: number): Promise<void>;
  /** After every write settled: waits for write-back, fsyncs, resolves with the XXH3-128 (32 hex digits). */
  finish(): Promise<string>;
}

export interface NativeXxh128 {
  update(bytes: Uint8Array): void;
  digest(): string;
}

/**
 * Testing aid: a path to a `.node` file to load instead of the addon
 * node-gyp-build finds (e.g. the sanitizer build, `npm run test:asan`).
 */
export const ADDON_PATH_VARIABLE = 'LIBVIRT_BACKUP_ADDON_PATH';

function loadAddon(): NativeAddon {
  const require = createRequire(import.meta.url);
  const override = process.env[ADDON_PATH_VARIABLE];
  if (override !== undefined && override !== '') {
    try {
      return require(override) as NativeAddon;
    } catch (cause) {
      throw new Error(`libvirt-backup: cannot load the addon named by ${ADDON_PATH_VARIABLE} (${override})`, { cause });
    }
  }
  const nodeGypBuild = require('node-gyp-build') as (dir: string) => unknown;
  const packageRoot = fileURLToPath(new URL('../..', import.meta.url));
  try {
    return nodeGypBuild(packageRoot) as NativeAddon;
  } catch (cause) {
    throw new Error(`libvirt-backup: ${missingAddonAdvice()}`, { cause });
  }
}

/** Why no addon loaded here and what to do, for the error of a failed load. */
function missingAddonAdvice(): string {
  // node-gyp-build takes LIBC from the environment before it looks at the system.
  const header = (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header;
  if (process.env.LIBC === 'musl' || header?.glibcVersionRuntime === undefined) {
    return (
      'the prebuilt binaries are for glibc, and this Node runs on another C library (musl?); ' +
      'build the addon from source: install libvirt-dev, xxhash-dev, zstd-dev, gnutls-dev, pkgconf, python3 and a C++ toolchain ' +
      '(Alpine: apk add libvirt-dev xxhash-dev zstd-dev gnutls-dev pkgconf python3 build-base) and run `npm rebuild libvirt-backup`.'
    );
  }
  return (
    `no prebuilt binary loads on linux-${process.arch} and the addon was not built from source. ` +
    'Install libvirt development files and a compiler (Debian: apt-get install libvirt-dev libxxhash-dev libzstd-dev pkg-config g++ make python3), ' +
    'allow the package its install script (npm >= 11: npm install-scripts approve libvirt-backup) and run `npm rebuild libvirt-backup`.'
  );
}

let loaded: NativeAddon | undefined;

/**
 * The addon, loaded on first use: `list` never needs it, and commands that only
 * checksum files load it (and libvirt with it) only when they do.
 */
export function nativeAddon(): NativeAddon {
  if (loaded === undefined) {
    loaded = loadAddon();
    loaded.setErrorClass(LibvirtError);
  }
  return loaded;
}

/** The addon if something has loaded it already, without loading it. */
export function nativeAddonIfLoaded(): NativeAddon | undefined {
  return loaded;
}

/**
 * Every export of the addon and every method on its classes' prototypes, as
 * declared above. `satisfies` makes each list name exactly the declared members,
 * and test/native-surface.test.ts compares the lists with what the loaded addon
 * really has, so the declarations and the addon cannot drift apart.
 */
export const NATIVE_SURFACE = {
  exports: {
    open: true,
    openConnection: true,
    ConnectionOpening: true,
    setErrorClass: true,
    getLibraryVersion: true,
    getCallTuning: true,
    setCallTuning: true,
    typedParamsRoundTrip: true,
    Connection: true,
    Domain: true,
    Checkpoint: true,
    StoragePool: true,
    StorageVolume: true,
    Stream: true,
    Xxh128: true,
    FileWriter: true,
    zstdCompressClusters: true,
    zstdDecompressCluster: true,
    tryLockFile: true,
    armExitWatchdog: true,
    hugePageMemory: true,
    startTlsRelay: true,
    CallPolicyProbe: true,
    SpinGovernorProbe: true,
  } satisfies Record<keyof NativeAddon, true>,
  Connection: {
    close: true,
    isClosed: true,
    getLibVersion: true,
    getVersion: true,
    getHostname: true,
    getURI: true,
    getCapabilities: true,
    getDomainCapabilities: true,
    isAlive: true,
    listAllDomains: true,
    lookupDomainByName: true,
    lookupDomainByUUID: true,
    defineDomain: true,
    createDomain: true,
    setEventHandler: true,
    registerDomainEvent: true,
    deregisterDomainEvent: true,
    registerCloseCallback: true,
    unregisterCloseCallback: true,
    setKeepAlive: true,
    lookupStoragePoolByName: true,
    createStoragePool: true,
    defineStoragePool: true,
    listAllStoragePools: true,
    newStream: true,
  } satisfies Record<keyof NativeConnection, true>,
  Domain: {
    getName: true,
    getUUIDString: true,
    getId: true,
    getXMLDesc: true,
    getState: true,
    isActive: true,
    isPersistent: true,
    start: true,
    shutdown: true,
    destroy: true,
    undefine: true,
    qemuMonitorCommand: true,
    createCheckpoint: true,
    listAllCheckpoints: true,
    lookupCheckpointByName: true,
    backupBegin: true,
    backupGetXMLDesc: true,
    abortJob: true,
    getJobInfo: true,
    getJobStats: true,
    blockCopy: true,
    blockJobAbort: true,
    getBlockJobInfo: true,
    blockJobSetSpeed: true,
    fsFreeze: true,
    fsThaw: true,
    getFSInfo: true,
  } satisfies Record<keyof NativeDomain, true>,
  ConnectionOpening: { abandon: true } satisfies Record<Exclude<keyof NativeConnectionOpening, 'promise'>, true>,
  Checkpoint: {
    getName: true,
    getDomain: true,
    getXMLDesc: true,
    getParent: true,
    listAllChildren: true,
    delete: true,
  } satisfies Record<keyof NativeCheckpoint, true>,
  StoragePool: {
    getName: true,
    getUUIDString: true,
    getXMLDesc: true,
    getInfo: true,
    isActive: true,
    isPersistent: true,
    refresh: true,
    start: true,
    destroy: true,
    undefine: true,
    createVolume: true,
    lookupVolumeByName: true,
    listAllVolumes: true,
  } satisfies Record<keyof NativeStoragePool, true>,
  StorageVolume: {
    getName: true,
    getKey: true,
    getPool: true,
    getPath: true,
    getInfo: true,
    getXMLDesc: true,
    delete: true,
    upload: true,
    download: true,
  } satisfies Record<keyof NativeStorageVolume, true>,
  Stream: { send: true, sendHole: true, recv: true, finish: true, abort: true } satisfies Record<keyof NativeStream, true>,
  Xxh128: { update: true, digest: true } satisfies Record<keyof NativeXxh128, true>,
  FileWriter: { write: true, hashHole: true, finish: true } satisfies Record<keyof NativeFileWriter, true>,
  CallPolicyProbe: { enqueue: true, take: true, finished: true, queued: true } satisfies Record<keyof NativeCallPolicyProbe, true>,
  SpinGovernorProbe: { window: true, found: true, ranOut: true, contended: true } satisfies Record<keyof NativeSpinGovernorProbe, true>,
};

/** The classes the addon exports, by name. */
export type NativeClassName = Exclude<keyof typeof NATIVE_SURFACE, 'exports'>;
