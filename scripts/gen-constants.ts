// Generates src/libvirt/constants.ts from the installed libvirt headers, so every flag and
// code we export has exactly the value the C library was built with. Run with
// `npm run gen:constants`; a test re-runs it and fails when the committed file
// no longer matches the headers.
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

interface EnumSpec {
  /** C typedef name in the libvirt headers. */
  c: string;
  /** Exported TypeScript enum name. */
  ts: string;
  /** Prefix removed from member names; omitted: names are kept whole (error codes). */
  strip?: string;
  doc: string;
}

const ENUMS: EnumSpec[] = [
  { c: 'virErrorNumber', ts: 'ErrorCode', doc: 'libvirt error codes (`LibvirtError.code`).' },
  { c: 'virErrorDomain', ts: 'ErrorDomain', doc: 'Where a libvirt error came from (`LibvirtError.domain`).' },
  { c: 'virErrorLevel', ts: 'ErrorLevel', strip: 'VIR_ERR_', doc: 'Severity of a libvirt error.' },
  { c: 'virConnectFlags', ts: 'ConnectFlags', strip: 'VIR_CONNECT_', doc: 'Flags for opening a connection.' },
  {
    c: 'virConnectCredentialType',
    ts: 'CredentialType',
    strip: 'VIR_CRED_',
    doc: 'What libvirt asks for while opening a connection (`CredentialRequest.type`).',
  },
  { c: 'virConnectListAllDomainsFlags', ts: 'ListDomainsFlags', strip: 'VIR_CONNECT_LIST_DOMAINS_', doc: 'Filters for `Connection.listAllDomains()`.' },
  { c: 'virConnectCloseReason', ts: 'CloseReason', strip: 'VIR_CONNECT_CLOSE_REASON_', doc: 'Why a connection closed (`close` event).' },
  { c: 'virDomainState', ts: 'DomainState', strip: 'VIR_DOMAIN_', doc: 'Domain states (`Domain.getState().state`).' },
  { c: 'virDomainNostateReason', ts: 'DomainNostateReason', strip: 'VIR_DOMAIN_NOSTATE_', doc: 'Reasons for DomainState.NOSTATE.' },
  { c: 'virDomainRunningReason', ts: 'DomainRunningReason', strip: 'VIR_DOMAIN_RUNNING_', doc: 'Reasons for DomainState.RUNNING.' },
  { c: 'virDomainBlockedReason', ts: 'DomainBlockedReason', strip: 'VIR_DOMAIN_BLOCKED_', doc: 'Reasons for DomainState.BLOCKED.' },
  { c: 'virDomainPausedReason', ts: 'DomainPausedReason', strip: 'VIR_DOMAIN_PAUSED_', doc: 'Reasons for DomainState.PAUSED.' },
  { c: 'virDomainShutdownReason', ts: 'DomainShutdownReason', strip: 'VIR_DOMAIN_SHUTDOWN_', doc: 'Reasons for DomainState.SHUTDOWN.' },
  { c: 'virDomainShutoffReason', ts: 'DomainShutoffReason', strip: 'VIR_DOMAIN_SHUTOFF_', doc: 'Reasons for DomainState.SHUTOFF.' },
  { c: 'virDomainCrashedReason', ts: 'DomainCrashedReason', strip: 'VIR_DOMAIN_CRASHED_', doc: 'Reasons for DomainState.CRASHED.' },
  { c: 'virDomainPMSuspendedReason', ts: 'DomainPMSuspendedReason', strip: 'VIR_DOMAIN_PMSUSPENDED_', doc: 'Reasons for DomainState.PMSUSPENDED.' },
  { c: 'virDomainXMLFlags', ts: 'DomainXMLFlags', strip: 'VIR_DOMAIN_XML_', doc: 'Flags for `Domain.getXMLDesc()`.' },
  { c: 'virDomainDefineFlags', ts: 'DomainDefineFlags', strip: 'VIR_DOMAIN_DEFINE_', doc: 'Flags for `Connection.defineDomain()`.' },
  { c: 'virDomainCreateFlags', ts: 'DomainCreateFlags', strip: 'VIR_DOMAIN_', doc: 'Flags for `Connection.createDomain()` and `Domain.start()`.' },
  { c: 'virDomainShutdownFlagValues', ts: 'DomainShutdownFlags', strip: 'VIR_DOMAIN_SHUTDOWN_', doc: 'Flags for `Domain.shutdown()`.' },
  { c: 'virDomainDestroyFlagsValues', ts: 'DomainDestroyFlags', strip: 'VIR_DOMAIN_DESTROY_', doc: 'Flags for `Domain.destroy()`.' },
  { c: 'virDomainUndefineFlagsValues', ts: 'UndefineFlags', strip: 'VIR_DOMAIN_UNDEFINE_', doc: 'Flags for `Domain.undefine()`.' },
  {
    c: 'virDomainQemuMonitorCommandFlags',
    ts: 'QemuMonitorCommandFlags',
    strip: 'VIR_DOMAIN_QEMU_MONITOR_COMMAND_',
    doc: 'Flags for `Domain.qemuMonitorCommand()`.',
  },
  { c: 'virDomainCheckpointCreateFlags', ts: 'CheckpointCreateFlags', strip: 'VIR_DOMAIN_CHECKPOINT_CREATE_', doc: 'Flags for `Domain.createCheckpoint()`.' },
  { c: 'virDomainCheckpointXMLFlags', ts: 'CheckpointXMLFlags', strip: 'VIR_DOMAIN_CHECKPOINT_XML_', doc: 'Flags for `Checkpoint.getXMLDesc()`.' },
  {
    c: 'virDomainCheckpointListFlags',
    ts: 'CheckpointListFlags',
    strip: 'VIR_DOMAIN_CHECKPOINT_LIST_',
    doc: 'Flags for `Domain.listAllCheckpoints()` and `Checkpoint.listAllChildren()`.',
  },
  { c: 'virDomainCheckpointDeleteFlags', ts: 'CheckpointDeleteFlags', strip: 'VIR_DOMAIN_CHECKPOINT_DELETE_', doc: 'Flags for `Checkpoint.delete()`.' },
  { c: 'virDomainBackupBeginFlags', ts: 'BackupBeginFlags', strip: 'VIR_DOMAIN_BACKUP_BEGIN_', doc: 'Flags for `Domain.backupBegin()`.' },
  { c: 'virDomainJobType', ts: 'JobType', strip: 'VIR_DOMAIN_JOB_', doc: 'Job types (`Domain.getJobInfo().type`).' },
  { c: 'virDomainGetJobStatsFlags', ts: 'JobStatsFlags', strip: 'VIR_DOMAIN_JOB_STATS_', doc: 'Flags for `Domain.getJobStats()`.' },
  { c: 'virDomainJobOperation', ts: 'JobOperation', strip: 'VIR_DOMAIN_JOB_OPERATION_', doc: 'What a job does (`operation` in job stats).' },
  { c: 'virDomainAbortJobFlagsValues', ts: 'AbortJobFlags', strip: 'VIR_DOMAIN_ABORT_JOB_', doc: 'Flags for `Domain.abortJob()`.' },
  { c: 'virDomainEventID', ts: 'DomainEventID', strip: 'VIR_DOMAIN_EVENT_ID_', doc: 'Domain event kinds libvirt can deliver.' },
  { c: 'virDomainEventType', ts: 'LifecycleEvent', strip: 'VIR_DOMAIN_EVENT_', doc: 'Lifecycle event types (`lifecycle` event `event`).' },
  { c: 'virDomainEventDefinedDetailType', ts: 'LifecycleDefinedDetail', strip: 'VIR_DOMAIN_EVENT_DEFINED_', doc: 'Details of LifecycleEvent.DEFINED.' },
  { c: 'virDomainEventUndefinedDetailType', ts: 'LifecycleUndefinedDetail', strip: 'VIR_DOMAIN_EVENT_UNDEFINED_', doc: 'Details of LifecycleEvent.UNDEFINED.' },
  { c: 'virDomainEventStartedDetailType', ts: 'LifecycleStartedDetail', strip: 'VIR_DOMAIN_EVENT_STARTED_', doc: 'Details of LifecycleEvent.STARTED.' },
  { c: 'virDomainEventSuspendedDetailType', ts: 'LifecycleSuspendedDetail', strip: 'VIR_DOMAIN_EVENT_SUSPENDED_', doc: 'Details of LifecycleEvent.SUSPENDED.' },
  { c: 'virDomainEventResumedDetailType', ts: 'LifecycleResumedDetail', strip: 'VIR_DOMAIN_EVENT_RESUMED_', doc: 'Details of LifecycleEvent.RESUMED.' },
  { c: 'virDomainEventStoppedDetailType', ts: 'LifecycleStoppedDetail', strip: 'VIR_DOMAIN_EVENT_STOPPED_', doc: 'Details of LifecycleEvent.STOPPED.' },
  { c: 'virDomainEventShutdownDetailType', ts: 'LifecycleShutdownDetail', strip: 'VIR_DOMAIN_EVENT_SHUTDOWN_', doc: 'Details of LifecycleEvent.SHUTDOWN.' },
  { c: 'virDomainBlockJobType', ts: 'BlockJobType', strip: 'VIR_DOMAIN_BLOCK_JOB_TYPE_', doc: 'Block job types (`block-job` event `type`).' },
  { c: 'virConnectDomainEventBlockJobStatus', ts: 'BlockJobStatus', strip: 'VIR_DOMAIN_BLOCK_JOB_', doc: 'Block job outcome (`block-job` event `status`).' },
  { c: 'virDomainBlockCopyFlags', ts: 'BlockCopyFlags', strip: 'VIR_DOMAIN_BLOCK_COPY_', doc: 'Flags for `Domain.blockCopy()`.' },
  { c: 'virDomainBlockJobAbortFlags', ts: 'BlockJobAbortFlags', strip: 'VIR_DOMAIN_BLOCK_JOB_ABORT_', doc: 'Flags for `Domain.blockJobAbort()`.' },
  { c: 'virDomainBlockJobInfoFlags', ts: 'BlockJobInfoFlags', strip: 'VIR_DOMAIN_BLOCK_JOB_INFO_', doc: 'Flags for `Domain.getBlockJobInfo()`.' },
  { c: 'virDomainBlockJobSetSpeedFlags', ts: 'BlockJobSetSpeedFlags', strip: 'VIR_DOMAIN_BLOCK_JOB_SPEED_', doc: 'Flags for `Domain.blockJobSetSpeed()`.' },
  { c: 'virTypedParameterType', ts: 'TypedParameterType', strip: 'VIR_TYPED_PARAM_', doc: 'Types of libvirt typed parameters.' },
  { c: 'virStoragePoolState', ts: 'StoragePoolState', strip: 'VIR_STORAGE_POOL_', doc: 'Storage pool states (`StoragePool.getInfo().state`).' },
  {
    c: 'virStoragePoolCreateFlags',
    ts: 'StoragePoolCreateFlags',
    strip: 'VIR_STORAGE_POOL_CREATE_',
    doc: 'Flags for `Connection.createStoragePool()` and `StoragePool.start()`.',
  },
  { c: 'virStoragePoolDefineFlags', ts: 'StoragePoolDefineFlags', strip: 'VIR_STORAGE_POOL_DEFINE_', doc: 'Flags for `Connection.defineStoragePool()`.' },
  {
    c: 'virConnectListAllStoragePoolsFlags',
    ts: 'ListStoragePoolsFlags',
    strip: 'VIR_CONNECT_LIST_STORAGE_POOLS_',
    doc: 'Filters for `Connection.listAllStoragePools()`.',
  },
  { c: 'virStorageVolType', ts: 'StorageVolumeType', strip: 'VIR_STORAGE_VOL_', doc: 'Volume types (`StorageVolume.getInfo().type`).' },
  { c: 'virStorageVolCreateFlags', ts: 'StorageVolumeCreateFlags', strip: 'VIR_STORAGE_VOL_CREATE_', doc: 'Flags for `StoragePool.createVolume()`.' },
  { c: 'virStorageVolDeleteFlags', ts: 'StorageVolumeDeleteFlags', strip: 'VIR_STORAGE_VOL_DELETE_', doc: 'Flags for `StorageVolume.delete()`.' },
  {
    c: 'virStorageVolUploadFlags',
    ts: 'StorageVolumeUploadFlags',
    strip: 'VIR_STORAGE_VOL_UPLOAD_',
    doc: 'Flags for uploading to a volume (`SPARSE_STREAM`: holes are sent as holes).',
  },
  {
    c: 'virStorageVolDownloadFlags',
    ts: 'StorageVolumeDownloadFlags',
    strip: 'VIR_STORAGE_VOL_DOWNLOAD_',
    doc: 'Flags for downloading a volume (`SPARSE_STREAM`: holes arrive as holes).',
  },
  { c: 'virStreamFlags', ts: 'StreamFlags', strip: 'VIR_STREAM_', doc: 'Flags for `Connection.newStream()`.' },
  { c: 'virStreamRecvFlagsValues', ts: 'StreamRecvFlags', strip: 'VIR_STREAM_RECV_', doc: 'Flags for receiving from a stream.' },
];

const HEADER_DIR = process.env.LIBVIRT_INCLUDE_DIR ?? '/usr/include/libvirt';

/** Every `typedef enum { ... } name;` in the headers, members in order with values. */
export function parseHeaderEnums(sources: string[]): Map<string, Array<[string, number]>> {
  const known = new Map<string, number>();
  const enums = new Map<string, Array<[string, number]>>();
  for (const source of sources) {
    const text = source.replace(/\/\*[\s\S]*?\*\//g, ' ').replace(/\/\/.*$/gm, ' ');
    for (const match of text.matchAll(/typedef\s+enum\s*\w*\s*\{([\s\S]*?)\}\s*(\w+)\s*;/g)) {
      const body = match[1]!.replace(/^\s*#.*$/gm, ' ');
      const members: Array<[string, number]> = [];
      let next = 0;
      for (const rawEntry of body.split(',')) {
        const entry = rawEntry.trim();
        if (entry === '') continue;
        const m = /^(\w+)\s*(?:=\s*([\s\S]+))?$/.exec(entry);
        if (!m) throw new Error(`cannot parse enum entry "${entry}" in ${match[2]}`);
        const name = m[1]!;
        const value = m[2] === undefined ? next : evaluate(m[2], known, name);
        known.set(name, value);
        next = value + 1;
        // Sentinels only exist to size arrays inside libvirt.
        if (!name.endsWith('_LAST')) members.push([name, value]);
      }
      enums.set(match[2]!, members);
    }
  }
  return enums;
}

function evaluate(expression: string, known: Map<string, number>, name: string): number {
  const unsuffixed = expression.replace(/\b(0x[0-9a-fA-F]+|\d+)[uUlL]+\b/g, '$1');
  const numeric = unsuffixed.replace(/(?<!\w)[A-Za-z_]\w*/g, (identifier) => {
    const value = known.get(identifier);
    if (value === undefined) throw new Error(`${name}: unknown identifier ${identifier} in "${expression}"`);
    return `(${value})`;
  });
  if (!/^[\s\d()xa-fA-F<>|&~+-]*$/.test(numeric)) {
    throw new Error(`${name}: unsupported expression "${expression}"`);
  }
  const value = Function(`"use strict"; return (${numeric});`)() as number;
  // A flag at bit 31 comes out negative from JS's signed shift; libvirt's is unsigned.
  return numeric.includes('<<') && value < 0 ? value >>> 0 : value;
}

export function renderConstants(headerDir = HEADER_DIR): string {
  // Headers refer to each other's constants: read them in libvirt.h's include
  // order, then the ones it does not include.
  const umbrella = readFileSync(join(headerDir, 'libvirt.h'), 'utf8');
  const ordered = [...umbrella.matchAll(/#\s*include\s*<libvirt\/([\w-]+\.h)>/g)].map((m) => m[1]!);
  const rest = readdirSync(headerDir)
    .filter((f) => f.endsWith('.h') && !ordered.includes(f))
    .sort();
  const files = [...ordered, ...rest].map((f) => readFileSync(join(headerDir, f), 'utf8'));
  const enums = parseHeaderEnums(files);
  const out: string[] = [
    '// Generated by scripts/gen-constants.ts from the installed libvirt headers. Do not edit.',
    "// Member names are libvirt's constant names without the common prefix",
    '// (error codes and domains keep their whole names, as libvirt prints them).',
    '',
  ];
  for (const spec of ENUMS) {
    const members = enums.get(spec.c);
    if (!members) throw new Error(`enum ${spec.c} not found in ${headerDir}`);
    out.push(`/** ${spec.doc} C: \`${spec.c}\`. */`, `export enum ${spec.ts} {`);
    for (const [name, value] of members) {
      let member = name;
      if (spec.strip !== undefined) {
        if (!name.startsWith(spec.strip)) throw new Error(`${spec.c}: ${name} lacks prefix ${spec.strip}`);
        member = name.slice(spec.strip.length);
        if (/^\d/.test(member)) member = `_${member}`;
      }
      out.push(`  ${member} = ${value},`);
    }
    out.push('}', '');
  }
  return out.join('\n');
}

const target = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'libvirt', 'constants.ts');
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  writeFileSync(target, renderConstants());
  console.log(`wrote ${target}`);
}
