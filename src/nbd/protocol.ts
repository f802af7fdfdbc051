// Wire constants of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md).
// Names follow the specification so the two can be read side by side.

export const NBDMAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
export const OLDSTYLE_MAGIC = 0x00420281861253n;
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;

export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

export const REQUEST_HEADER_SIZE = 28;
export const SIMPLE_REPLY_HEADER_SIZE = 16;
export const STRUCTURED_REPLY_HEADER_SIZE = 20;

/** Largest payload a server has to accept or may send for one request. */
export const MAX_PAYLOAD = 32 * 1024 * 1024;
/** No reply chunk may be longer than a maximal payload plus its own small header. */
export const MAX_REPLY_CHUNK = MAX_PAYLOAD + 4096;
/** Option replies carry names and descriptions of at most a few KiB each. */
export const MAX_OPTION_REPLY = 1024 * 1024;
/**
 * What all the replies to one option may add up to. Lists (exports, meta contexts) are
 * the longest answers; a server that keeps answering is not allowed to fill our memory.
 */
export const MAX_OPTION_REPLIES = 65_536;
export const MAX_OPTION_REPLIES_BYTES = 16 * 1024 * 1024;
/** An error chunk: errno, a message of at most 64 KiB (its length is 16 bits), an offset. */
export const MAX_ERROR_CHUNK = 4 + 2 + 0xffff + 8;
/** The minimum block size a server may state: a power of two up to 64 KiB. */
export const MAX_MINIMUM_BLOCK_SIZE = 64 * 1024;
/** A maximum block size of all ones means the server sets no limit of its own. */
export const NO_MAXIMUM_BLOCK_SIZE = 0xffffffff;

export const HandshakeFlags = {
  FIXED_NEWSTYLE: 1 << 0,
  NO_ZEROES: 1 << 1,
} as const;

export const Option = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;

const REP_ERROR_BIT = 0x80000000;

export const OptionReply = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: REP_ERROR_BIT + 1,
  ERR_POLICY: REP_ERROR_BIT + 2,
  ERR_INVALID: REP_ERROR_BIT + 3,
  ERR_PLATFORM: REP_ERROR_BIT + 4,
  ERR_TLS_REQD: REP_ERROR_BIT + 5,
  ERR_UNKNOWN: REP_ERROR_BIT + 6,
  ERR_SHUTDOWN: REP_ERROR_BIT + 7,
  ERR_BLOCK_SIZE_REQD: REP_ERROR_BIT + 8,
  ERR_TOO_BIG: REP_ERROR_BIT + 9,
  ERR_EXT_HEADER_REQD: REP_ERROR_BIT + 10,
} as const;

export function isOptionReplyError(type: number): boolean {
  return type >= REP_ERROR_BIT;
}

export const Info = {
  EXPORT: 0,
  NAME: 1,
  DESCRIPTION: 2,
  BLOCK_SIZE: 3,
} as const;

/** Transmission flags, sent by the server with the export size. */
export const TransmissionFlags = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
  BLOCK_STAT_PAYLOAD: 1 << 12,
} as const;

export const Command = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
  RESIZE: 8,
} as const;
export type CommandCode = (typeof Command)[keyof typeof Command];

/** NBD command flags. */
export const CommandFlags = {
  FUA: 1 << 0,
  NO_HOLE: 1 << 1,
  DF: 1 << 2,
  REQ_ONE: 1 << 3,
  FAST_ZERO: 1 << 4,
} as const;

export const ReplyFlags = {
  DONE: 1 << 0,
} as const;

export const ReplyType = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: (1 << 15) + 1,
  ERROR_OFFSET: (1 << 15) + 2,
} as const;

/** `base:allocation` extent flags. */
export const AllocationFlags = {
  HOLE: 1 << 0,
  ZERO: 1 << 1,
} as const;

/** `qemu:dirty-bitmap:NAME` extent flags. */
export const DirtyBitmapFlags = {
  DIRTY: 1 << 0,
} as const;

/** The meta context that reports holes and zeroes. */
export const BASE_ALLOCATION = 'base:allocation';

/** errno values the protocol allows on the wire (they are not the host's numbers). */
export const Errno: Readonly<Record<number, string>> = {
  1: 'EPERM',
  5: 'EIO',
  12: 'ENOMEM',
  22: 'EINVAL',
  28: 'ENOSPC',
  75: 'EOVERFLOW',
  95: 'ENOTSUP',
  108: 'ESHUTDOWN',
};

export function errnoName(errno: number): string {
  return Errno[errno] ?? `errno ${errno}`;
}

export function nameOf(table: Readonly<Record<string, number>>, value: number, prefix: string): string {
  for (const [name, v] of Object.entries(table)) if (v === value) return prefix + name;
  return `${prefix}${value}`;
}
