import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { QuiesceMode, RequestedLevel } from '../backup/index.js';
import type { BackupTransport } from '../backup/index.js';
import { COMMAND_NAMES, isCommandName, type CommandName } from './help.js';
import { closestMatch } from './suggest.js';

export const DEFAULT_URI = 'qemu:///system';

/** A command line that cannot be run as written; the message names the culprit. */
export class UsageError extends Error {
  override name = 'UsageError';

  constructor(
    message: string,
    /** The command whose usage to point at, when known. */
    readonly command?: CommandName,
  ) {
    super(message);
  }
}

/** How a command reaches and authenticates to libvirt. */
export interface ConnectionArgs {
  uri: string;
  /** `--username`: the SASL or SSH user, when the URI does not say. */
  username: string | undefined;
  /** `--password-file`: a file whose first line is the password (never the password itself). */
  passwordFile: string | undefined;
  /** `--connect-timeout`, in milliseconds. */
  connectTimeoutMs: number | undefined;
}

/** How a pull backup reads a remote hypervisor (`--nbd-host`, `--nbd-ports`, `--nbd-tls`, `--tls-dir`). */
export interface RemoteArgs {
  nbdHost: string | undefined;
  nbdPorts: { first: number; last: number } | undefined;
  nbdTls: boolean;
  tlsDir: string | undefined;
  /** `--dest-shared`: the hypervisor sees `--dest` at the same path (push on a remote URI). */
  destShared: boolean;
}

/** `--all`: every running domain of each `--connect` URI (or those `--match` selects), each into `--dest ROOT/<host>/<domain>`. */
export interface AllDomainsArgs {
  /** Every `--connect` URI, in the order given (the default URI when none is). */
  uris: string[];
  /** `--match` glob patterns on domain names; a domain matching any is taken (every one when empty). */
  match: string[];
  /** `--parallel N`: how many domains are backed up at once. */
  parallel: number;
}

export interface BackupArgs extends ConnectionArgs, RemoteArgs {
  command: 'backup';
  /** The DOMAIN argument; empty with `--all`. */
  domain: string;
  /** Set with `--all` (then `domain` is empty and `dest` is the root of the sets). */
  all: AllDomainsArgs | undefined;
  dest: string;
  level: RequestedLevel;
  transport: BackupTransport;
  disks: string[] | undefined;
  /** Directory for the pull job's scratch files; default the set directory. */
  scratchDir: string | undefined;
  /** `--compress zstd|zlib`: the files' clusters stored compressed. */
  compress: 'zstd' | 'zlib' | undefined;
  /** `--dry-run`: say the level and the bytes per disk, create nothing. */
  dryRun: boolean;
  /** `--start-paused`: a shut-off domain is started paused for the backup instead of read from its images. */
  startPaused: boolean;
  /** `--quiesce[=yes|try|no]`: freeze the guest's file systems while the job starts; `--freeze-mountpoint` implies yes. */
  quiesce: QuiesceMode | undefined;
  /** `--freeze-mountpoint PATH` (repeatable): the guest mount points to freeze instead of all. */
  freezeMountpoints: string[];
  json: boolean;
}

export interface RestoreArgs extends ConnectionArgs {
  command: 'restore';
  dir: string;
  /** Exactly one of `to` (files) and `pool` (new volumes through libvirt) is set. */
  to: string | undefined;
  pool: string | undefined;
  /** With `pool`: define a domain of this name on the new volumes. */
  define: string | undefined;
  at: string | undefined;
  disk: string | undefined;
  format: 'qcow2' | 'raw';
  overwrite: boolean;
  /** False with --no-verify: damaged chain files are restored anyway. */
  verify: boolean;
  json: boolean;
}

export interface VerifyArgs {
  command: 'verify';
  dir: string;
  json: boolean;
}

export interface ListArgs {
  command: 'list';
  dir: string;
  json: boolean;
}

export interface PruneArgs extends ConnectionArgs {
  command: 'prune';
  dir: string;
  keep: number;
  json: boolean;
}

export interface RunArgs extends ConnectionArgs {
  command: 'run';
  dir: string;
  at: string | undefined;
  name: string;
  overlayDir: string | undefined;
  /** `--overlay-pool`: the overlays are volumes of this storage pool of the hypervisor. */
  overlayPool: string | undefined;
  json: boolean;
}

export interface MigrateStorageArgs extends ConnectionArgs {
  command: 'migrate-storage';
  domain: string;
  /** Exactly one of `to` (a directory on the hypervisor host) and `pool` is set. */
  to: string | undefined;
  pool: string | undefined;
  json: boolean;
}

export interface ExportArgs {
  command: 'export';
  dir: string;
  at: string | undefined;
  disk: string;
  /** A unix socket path, or a TCP address with TLS; a socket in a new private directory when neither is given. */
  socket: string | undefined;
  tcp: { host: string; port: number } | undefined;
  tlsDir: string | undefined;
  json: boolean;
}

export type CommandArgs = BackupArgs | RestoreArgs | VerifyArgs | ListArgs | PruneArgs | RunArgs | MigrateStorageArgs | ExportArgs;

export type Invocation = CommandArgs | { command: 'help'; topic: CommandName | undefined } | { command: 'version' };

type Options = NonNullable<ParseArgsConfig['options']>;

const json = { type: 'boolean' } as const;
const help = { type: 'boolean', short: 'h' } as const;
/** The options of commands that connect to libvirt. */
const CONNECTION_OPTIONS: Options = {
  connect: { type: 'string' },
  username: { type: 'string' },
  'password-file': { type: 'string' },
  'connect-timeout': { type: 'string' },
};

const OPTIONS: Record<CommandName, Options> = {
  backup: {
    ...CONNECTION_OPTIONS,
    // Several with --all: one run backs up many hypervisors.
    connect: { type: 'string', multiple: true },
    dest: { type: 'string' },
    level: { type: 'string' },
    transport: { type: 'string' },
    compress: { type: 'string' },
    disk: { type: 'string', multiple: true },
    'scratch-dir': { type: 'string' },
    'nbd-host': { type: 'string' },
    'nbd-ports': { type: 'string' },
    'nbd-tls': { type: 'string' },
    'tls-dir': { type: 'string' },
    'dest-shared': { type: 'boolean' },
    'dry-run': { type: 'boolean' },
    'start-paused': { type: 'boolean' },
    // A bare --quiesce means yes (see OPTIONAL_VALUES).
    quiesce: { type: 'string' },
    'freeze-mountpoint': { type: 'string', multiple: true },
    all: { type: 'boolean' },
    match: { type: 'string', multiple: true },
    parallel: { type: 'string' },
    json,
    help,
  },
  restore: {
    to: { type: 'string' },
    pool: { type: 'string' },
    define: { type: 'string' },
    ...CONNECTION_OPTIONS,
    at: { type: 'string' },
    disk: { type: 'string' },
    format: { type: 'string' },
    overwrite: { type: 'boolean' },
    'no-verify': { type: 'boolean' },
    json,
    help,
  },
  verify: { json, help },
  list: { json, help },
  run: {
    at: { type: 'string' },
    name: { type: 'string' },
    'overlay-dir': { type: 'string' },
    'overlay-pool': { type: 'string' },
    ...CONNECTION_OPTIONS,
    json,
    help,
  },
  'migrate-storage': { to: { type: 'string' }, pool: { type: 'string' }, ...CONNECTION_OPTIONS, json, help },
  export: { at: { type: 'string' }, disk: { type: 'string' }, socket: { type: 'string' }, tcp: { type: 'string' }, 'tls-dir': { type: 'string' }, json, help },
  prune: { keep: { type: 'string' }, ...CONNECTION_OPTIONS, json, help },
};

/**
 * Options that take a whole number, with the smallest value each allows. They are
 * parsed and checked in one place so every one refuses `-1`, `1.5`, `abc` or an empty
 * value with the same message.
 */
const NUMERIC_OPTIONS: Partial<Record<CommandName, Record<string, { min: number }>>> = {
  backup: { 'connect-timeout': { min: 1 }, parallel: { min: 1 } },
  restore: { 'connect-timeout': { min: 1 } },
  run: { 'connect-timeout': { min: 1 } },
  'migrate-storage': { 'connect-timeout': { min: 1 } },
  prune: { keep: { min: 1 }, 'connect-timeout': { min: 1 } },
};

/** Names people reach for from other tools, and the option that does that here. */
const OPTION_SYNONYMS: Record<string, string> = {
  uri: 'connect',
  url: 'connect',
  'connect-uri': 'connect',
  // A password on the command line would show in `ps`: only a file is taken.
  password: 'password-file',
  user: 'username',
  'nbd-ip': 'nbd-host',
  tls: 'nbd-tls',
};

const POSITIONAL: Record<CommandName, string> = {
  backup: 'DOMAIN',
  restore: 'DIR',
  verify: 'DIR',
  list: 'DIR',
  prune: 'DIR',
  run: 'DIR',
  'migrate-storage': 'DOMAIN',
  export: 'DIR',
};

export function parseCommandLine(argv: readonly string[]): Invocation {
  const [first, ...rest] = argv;
  if (first === undefined) throw new UsageError(`a command is required (${COMMAND_NAMES.join(', ')})`);
  if (first === '--help' || first === '-h') return { command: 'help', topic: undefined };
  if (first === '--version' || first === '-V') return { command: 'version' };
  if (first === 'help') {
    const topic = rest[0];
    if (topic === undefined) return { command: 'help', topic: undefined };
    if (!isCommandName(topic)) throw new UsageError(unknownCommand(topic));
    return { command: 'help', topic };
  }
  if (first.startsWith('-')) {
    const meant = closestMatch(first, ['--help', '--version']);
    throw new UsageError(
      `unknown option '${first}'${meant === undefined ? `; options go after the command (${COMMAND_NAMES.join(', ')})` : `; did you mean '${meant}'?`}`,
    );
  }
  if (!isCommandName(first)) throw new UsageError(unknownCommand(first));
  return parseCommand(first, rest);
}

function unknownCommand(word: string): string {
  const meant = closestMatch(word, COMMAND_NAMES);
  return meant === undefined ? `unknown command '${word}' (commands: ${COMMAND_NAMES.join(', ')})` : `unknown command '${word}'; did you mean '${meant}'?`;
}

function parseCommand(command: CommandName, args: readonly string[]): Invocation {
  const parsed = parseStrict(command, args);
  const values = parsed.values;
  if (values['help'] === true) return { command: 'help', topic: command };

  if (command === 'backup') normaliseBackupTargets(values, parsed.positionals);
  const positionals = parsed.positionals;
  const name = POSITIONAL[command];
  if (positionals.length === 0) throw new UsageError(`${name} is required`, command);
  if (positionals.length > 1) throw new UsageError(`unexpected argument '${positionals[1]}' (only one ${name} is taken)`, command);
  const subject = positionals[0]!;
  if (subject === '') throw new UsageError(`${name} must not be empty`, command);
  const jsonOutput = values['json'] === true;

  switch (command) {
    case 'backup':
      return {
        command,
        domain: values['all'] === true ? '' : subject,
        all: allDomains(values),
        dest: required(values, 'dest', command),
        level: oneOf(values, 'level', ['auto', 'full', 'inc', 'diff'] as const, 'auto', command),
        transport: oneOf(values, 'transport', ['pull', 'push'] as const, 'pull', command),
        disks: diskList(values['disk'], command),
        scratchDir: optionalString(values, 'scratch-dir', command),
        compress: values['compress'] === undefined ? undefined : oneOf(values, 'compress', ['zstd', 'zlib'] as const, 'zstd', command),
        dryRun: values['dry-run'] === true,
        startPaused: values['start-paused'] === true,
        ...quiesceArgs(values, command),
        ...connectionArgs(values, command),
        ...remoteArgs(values, command),
        json: jsonOutput,
      };
    case 'restore':
      return {
        command,
        dir: subject,
        ...restoreDestination(values),
        ...connectionArgs(values, command),
        at: optionalString(values, 'at', command),
        disk: optionalString(values, 'disk', command),
        format: oneOf(values, 'format', ['qcow2', 'raw'] as const, 'qcow2', command),
        overwrite: values['overwrite'] === true,
        verify: values['no-verify'] !== true,
        json: jsonOutput,
      };
    case 'verify':
    case 'list':
      return { command, dir: subject, json: jsonOutput };
    case 'run':
      return {
        command,
        dir: subject,
        at: optionalString(values, 'at', command),
        name: required(values, 'name', command),
        ...overlayPlace(values),
        ...connectionArgs(values, command),
        json: jsonOutput,
      };
    case 'migrate-storage':
      return { command, domain: subject, ...storageDestination(values), ...connectionArgs(values, command), json: jsonOutput };
    case 'export':
      return {
        command,
        dir: subject,
        at: optionalString(values, 'at', command),
        disk: required(values, 'disk', command),
        ...exportServer(values),
        json: jsonOutput,
      };
    case 'prune': {
      const keep = wholeNumber(values, 'keep', command);
      if (keep === undefined) throw new UsageError(`option '--keep' is required`, command);
      return { command, dir: subject, keep, ...connectionArgs(values, command), json: jsonOutput };
    }
  }
}

type Values = Record<string, string | boolean | Array<string | boolean> | undefined>;

function connectionArgs(values: Values, command: CommandName): ConnectionArgs {
  const seconds = wholeNumber(values, 'connect-timeout', command);
  return {
    uri: optionalString(values, 'connect', command) ?? DEFAULT_URI,
    username: optionalString(values, 'username', command),
    passwordFile: optionalString(values, 'password-file', command),
    connectTimeoutMs: seconds === undefined ? undefined : seconds * 1000,
  };
}

/**
 * `backup --all` takes no DOMAIN and may take several `--connect`; one DOMAIN takes one
 * `--connect` and none of the options that choose domains. Called before the positional
 * check, which then sees a stand-in for the absent DOMAIN.
 */
function normaliseBackupTargets(values: Values, positionals: string[]): void {
  const command = 'backup';
  const connects = values['connect'] === undefined ? [] : (values['connect'] as string[]);
  if (connects.some((uri) => uri === '')) throw new UsageError(`option '--connect' needs a value`, command);
  values['all-connects'] = connects;
  if (values['all'] === true) {
    if (positionals.length > 0)
      throw new UsageError(`'--all' backs up every running domain: give no DOMAIN (got '${positionals[0]}'), or use --match`, command);
    if (values['disk'] !== undefined) throw new UsageError(`option '--disk' chooses disks of one domain; it does not go with '--all'`, command);
    if (connects.length > 1 && values['nbd-host'] !== undefined) {
      throw new UsageError(`option '--nbd-host' names one hypervisor's address; it does not go with several '--connect'`, command);
    }
    positionals.push('--all');
  } else {
    for (const option of ['match', 'parallel']) {
      if (values[option] !== undefined) throw new UsageError(`option '--${option}' goes with '--all'`, command);
    }
    if (connects.length > 1) throw new UsageError(`several '--connect' go with '--all'; one DOMAIN is on one hypervisor`, command);
  }
  values['connect'] = connects[0];
}

function allDomains(values: Values): AllDomainsArgs | undefined {
  const command = 'backup';
  if (values['all'] !== true) return undefined;
  const raw = values['all-connects'] as string[] | undefined;
  const match = ((values['match'] as string[] | undefined) ?? []).map((pattern) => {
    if (pattern === '') throw new UsageError(`option '--match' needs a pattern such as 'web-*'`, command);
    return pattern;
  });
  return { uris: raw !== undefined && raw.length > 0 ? raw : [DEFAULT_URI], match, parallel: wholeNumber(values, 'parallel', command) ?? 1 };
}

function remoteArgs(values: Values, command: CommandName): RemoteArgs {
  const ports = optionalString(values, 'nbd-ports', command);
  return {
    nbdHost: optionalString(values, 'nbd-host', command),
    nbdPorts: ports === undefined ? undefined : portRange(ports, command),
    nbdTls: oneOf(values, 'nbd-tls', ['yes', 'no'] as const, 'yes', command) === 'yes',
    tlsDir: optionalString(values, 'tls-dir', command),
    destShared: values['dest-shared'] === true,
  };
}

/** `--nbd-ports 10809-10999`, or one port. */
function portRange(text: string, command: CommandName): { first: number; last: number } {
  const match = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(text);
  const first = match ? Number(match[1]) : Number.NaN;
  const last = match?.[2] !== undefined ? Number(match[2]) : first;
  if (!(first >= 1 && last <= 65535 && first <= last)) {
    throw new UsageError(`--nbd-ports must be a port or a range FIRST-LAST of ports from 1 to 65535, got ${text}`, command);
  }
  return { first, last };
}

/** Files (`--to`) or a storage pool (`--pool`, with `--define` and the connection options), never both. */
function restoreDestination(values: Values): Pick<RestoreArgs, 'to' | 'pool' | 'define'> {
  const command = 'restore';
  const to = optionalString(values, 'to', command);
  const pool = optionalString(values, 'pool', command);
  const define = optionalString(values, 'define', command);
  if (to !== undefined && pool !== undefined)
    throw new UsageError(`options '--to' and '--pool' exclude each other: restore to files or into a storage pool`, command);
  if (to === undefined && pool === undefined) throw new UsageError(`option '--to' or '--pool' is required`, command);
  if (pool === undefined) {
    for (const option of ['define', ...Object.keys(CONNECTION_OPTIONS)]) {
      if (values[option] !== undefined) throw new UsageError(`option '--${option}' goes with '--pool' (a restore to files needs no libvirt)`, command);
    }
  } else {
    if (values['overwrite'] === true) throw new UsageError(`option '--overwrite' does not apply to '--pool': existing volumes are never overwritten`, command);
    if (define !== undefined && values['disk'] !== undefined) throw new UsageError(`option '--define' needs every disk; it does not go with '--disk'`, command);
  }
  return { to, pool, define };
}

function parseStrict(command: CommandName, args: readonly string[]): { values: Values; positionals: string[] } {
  try {
    const { values, positionals } = parseArgs({
      args: attachNegativeNumbers(command, defaultOptionalValues(command, args)),
      options: OPTIONS[command],
      strict: true,
      allowPositionals: true,
    });
    return { values: values as Values, positionals };
  } catch (error) {
    throw new UsageError(describeParseError(error, command), command);
  }
}

/** Options whose value may be left out (`--quiesce` alone), and the value that stands for it then. */
const OPTIONAL_VALUES: Partial<Record<CommandName, Record<string, string>>> = { backup: { quiesce: 'yes' } };

/** node:util has no options with an optional value: a bare one gets its default (`--quiesce` is `--quiesce=yes`). */
function defaultOptionalValues(command: CommandName, args: readonly string[]): readonly string[] {
  const optional = OPTIONAL_VALUES[command];
  if (optional === undefined) return args;
  const end = args.indexOf('--');
  return args.map((arg, index) => {
    if ((end !== -1 && index >= end) || !arg.startsWith('--')) return arg;
    const value = optional[arg.slice(2)];
    return value === undefined ? arg : `${arg}=${value}`;
  });
}

/** `--quiesce[=yes|try|no]` and `--freeze-mountpoint PATH`, which implies yes and needs an absolute path. */
function quiesceArgs(values: Values, command: CommandName): Pick<BackupArgs, 'quiesce' | 'freezeMountpoints'> {
  const quiesce = values['quiesce'] === undefined ? undefined : oneOf(values, 'quiesce', ['yes', 'try', 'no'] as const, 'yes', command);
  const freezeMountpoints = (values['freeze-mountpoint'] as string[] | undefined) ?? [];
  for (const mountpoint of freezeMountpoints) {
    if (!mountpoint.startsWith('/'))
      throw new UsageError(`option '--freeze-mountpoint' takes a mount point in the guest, an absolute path; got '${mountpoint}'`, command);
  }
  if (quiesce === 'no' && freezeMountpoints.length > 0) {
    throw new UsageError(`option '--freeze-mountpoint' freezes file systems: it does not go with '--quiesce=no'`, command);
  }
  return { quiesce, freezeMountpoints };
}

/**
 * node:util takes the `-1` of `--keep -1` for an option and reports the value as missing.
 * No option here looks like a negative number, so it is the value, and the range check
 * can then say what is wrong with it.
 */
function attachNegativeNumbers(command: CommandName, args: readonly string[]): string[] {
  const numeric = NUMERIC_OPTIONS[command] ?? {};
  const attached: string[] = [];
  for (let index = 0; index < args.length; index += 1) {
    const arg = args[index]!;
    if (arg === '--') {
      attached.push(...args.slice(index));
      break;
    }
    const next = args[index + 1];
    if (arg.startsWith('--') && Object.hasOwn(numeric, arg.slice(2)) && next !== undefined && /^-\.?\d/.test(next)) {
      attached.push(`${arg}=${next}`);
      index += 1;
    } else {
      attached.push(arg);
    }
  }
  return attached;
}

/** node:util's messages are long and generic; say which option and what is wrong. */
function describeParseError(error: unknown, command: CommandName): string {
  const message = error instanceof Error ? error.message : String(error);
  const code = typeof error === 'object' && error !== null && 'code' in error ? (error as { code: unknown }).code : undefined;
  const option = /'(-{1,2}[^' ]+)/.exec(message)?.[1];
  switch (code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return option === undefined ? message : unknownOption(option, command);
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      if (/ambiguous/.test(message)) return `option '${option}' needs a value; a value that starts with '-' is written ${option}=-VALUE`;
      if (/argument missing/.test(message)) return `option '${option}' needs a value`;
      if (/does not take an argument/.test(message)) return `option '${option}' does not take a value`;
      return message;
    default:
      return message;
  }
}

/** Points at the option that was probably meant: a near spelling, a synonym, or another command's. */
function unknownOption(option: string, command: CommandName): string {
  const unknown = `unknown option '${option}'`;
  if (!option.startsWith('--')) return unknown;
  const name = option.slice(2).split('=')[0]!;
  const known = Object.keys(OPTIONS[command]);
  const synonym = OPTION_SYNONYMS[name];
  const meant = synonym !== undefined && known.includes(synonym) ? synonym : closestMatch(name, known);
  if (meant !== undefined) return `${unknown}; did you mean '--${meant}'?`;
  const owners = COMMAND_NAMES.filter((other) => Object.hasOwn(OPTIONS[other], name));
  if (owners.length > 0) return `${unknown}: ${command} does not take it (${owners.join(', ')} ${owners.length === 1 ? 'does' : 'do'})`;
  return unknown;
}

/** `run`: the overlays in a directory of this host (`--overlay-dir`) or a storage pool (`--overlay-pool`), never both. */
function overlayPlace(values: Values): Pick<RunArgs, 'overlayDir' | 'overlayPool'> {
  const command = 'run';
  const overlayDir = optionalString(values, 'overlay-dir', command);
  const overlayPool = optionalString(values, 'overlay-pool', command);
  if (overlayDir !== undefined && overlayPool !== undefined)
    throw new UsageError(
      `options '--overlay-dir' and '--overlay-pool' exclude each other: a directory of this host or a storage pool of the hypervisor`,
      command,
    );
  return { overlayDir, overlayPool };
}

/** `migrate-storage`: a directory (`--to`) or a storage pool (`--pool`), never both. */
function storageDestination(values: Values): Pick<MigrateStorageArgs, 'to' | 'pool'> {
  const command = 'migrate-storage';
  const to = optionalString(values, 'to', command);
  const pool = optionalString(values, 'pool', command);
  if (to !== undefined && pool !== undefined) throw new UsageError(`options '--to' and '--pool' exclude each other: a directory or a storage pool`, command);
  if (to === undefined && pool === undefined) throw new UsageError(`option '--to' or '--pool' is required`, command);
  return { to, pool };
}

/** `export`: a unix socket, or TCP with TLS (`--tcp HOST:PORT --tls-dir DIR`). */
function exportServer(values: Values): Pick<ExportArgs, 'socket' | 'tcp' | 'tlsDir'> {
  const command = 'export';
  const socket = optionalString(values, 'socket', command);
  const tcpText = optionalString(values, 'tcp', command);
  const tlsDir = optionalString(values, 'tls-dir', command);
  if (socket !== undefined && tcpText !== undefined) throw new UsageError(`options '--socket' and '--tcp' exclude each other`, command);
  if (tcpText === undefined) {
    if (tlsDir !== undefined) throw new UsageError(`option '--tls-dir' goes with '--tcp' (a unix socket needs no TLS)`, command);
    return { socket, tcp: undefined, tlsDir: undefined };
  }
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(tcpText);
  const port = match ? Number(match[3]) : Number.NaN;
  if (!match || !(port >= 1 && port <= 65535)) throw new UsageError(`--tcp must be HOST:PORT with a port from 1 to 65535, got ${tcpText}`, command);
  if (tlsDir === undefined)
    throw new UsageError(`option '--tcp' needs '--tls-dir DIR' (ca-cert.pem, server-cert.pem, server-key.pem): a TCP export is served over TLS only`, command);
  return { socket: undefined, tcp: { host: match[1] ?? match[2]!, port }, tlsDir };
}

function optionalString(values: Values, option: string, command: CommandName): string | undefined {
  const value = values[option];
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value === '') throw new UsageError(`option '--${option}' needs a value`, command);
  return value;
}

function required(values: Values, option: string, command: CommandName): string {
  const value = optionalString(values, option, command);
  if (value === undefined) throw new UsageError(`option '--${option}' is required`, command);
  return value;
}

function oneOf<const T extends string>(values: Values, option: string, allowed: readonly T[], fallback: T, command: CommandName): T {
  const value = optionalString(values, option, command);
  if (value === undefined) return fallback;
  if (!(allowed as readonly string[]).includes(value)) {
    throw new UsageError(`option '--${option}' must be one of ${allowed.join(', ')}, got '${value}'`, command);
  }
  return value as T;
}

/** A numeric option's value (see NUMERIC_OPTIONS), or undefined when it was not given. */
function wholeNumber(values: Values, option: string, command: CommandName): number | undefined {
  const value = values[option];
  if (value === undefined) return undefined;
  const { min } = NUMERIC_OPTIONS[command]![option]!;
  const text = typeof value === 'string' ? value : '';
  const number = /^\d+$/.test(text) ? Number(text) : Number.NaN;
  if (Number.isSafeInteger(number) && number >= min) return number;
  const shown = text === '' ? 'nothing' : /^\S+$/.test(text) ? text : `'${text}'`;
  const limit = number > Number.MAX_SAFE_INTEGER ? ` and at most ${Number.MAX_SAFE_INTEGER}` : '';
  throw new UsageError(`--${option} must be a whole number of at least ${min}${limit}, got ${shown}`, command);
}

/** `--disk vda --disk vdb` and `--disk vda,vdb` both work; duplicates are refused. */
function diskList(value: Values[string], command: CommandName): string[] | undefined {
  if (value === undefined) return undefined;
  const items = (Array.isArray(value) ? value : [value]).flatMap((item) => String(item).split(','));
  const disks = items.map((item) => item.trim());
  if (disks.some((disk) => disk === '')) throw new UsageError(`option '--disk' needs a disk target such as vda`, command);
  const duplicate = disks.find((disk, index) => disks.indexOf(disk) !== index);
  if (duplicate !== undefined) throw new UsageError(`option '--disk' names '${duplicate}' twice`, command);
  return disks;
}
