/**
 * What a hostile NBD server does, written down before it runs: how it greets, how it
 * answers each option, and how it answers each request. Answers are described relative
 * to the request they answer (a read's pieces as fractions of its length, shifts as byte
 * deltas), so one plan means something for whatever requests a client happens to send.
 */

/** Option reply types (proto.md, "Option reply types"). */
export const REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: 0x80000001,
  ERR_POLICY: 0x80000002,
  ERR_INVALID: 0x80000003,
  ERR_UNKNOWN: 0x80000006,
  ERR_SHUTDOWN: 0x80000007,
} as const;

export const OPT = { EXPORT_NAME: 1, ABORT: 2, LIST: 3, STARTTLS: 5, GO: 7, STRUCTURED_REPLY: 8, LIST_META_CONTEXT: 9, SET_META_CONTEXT: 10 } as const;

export const CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, WRITE_ZEROES: 6, BLOCK_STATUS: 7 } as const;

export const REPLY_TYPE = { NONE: 0, OFFSET_DATA: 1, OFFSET_HOLE: 2, BLOCK_STATUS: 5, ERROR: 0x8001, ERROR_OFFSET: 0x8002 } as const;

export const SIMPLE_MAGIC = 0x67446698;
export const STRUCTURED_MAGIC = 0x668e33ef;
export const DONE_FLAG = 1;

export type GreetingPlan =
  | { kind: 'good' }
  | { kind: 'bad-magic' }
  | { kind: 'oldstyle' }
  | { kind: 'not-fixed-newstyle' }
  /** The first `keep` bytes of a good greeting, then the socket is closed. */
  | { kind: 'truncated'; keep: number }
  | { kind: 'silent' }
  | { kind: 'garbage'; bytes: Uint8Array };

/** One option reply as sent: header fields may lie about the data that follows. */
export interface OptionFrame {
  /** A wrong magic instead of the option reply magic. */
  badMagic?: boolean;
  /** The option the reply claims to answer; the option asked by default. */
  option?: number;
  type: number;
  data: Uint8Array;
  /** Header length when it differs from `data.length`. */
  declaredLength?: number;
}

export type OptionPlan =
  | { kind: 'good' }
  /** An error reply (or any other type) with a message. */
  | { kind: 'refuse'; type: number; message: string }
  /** Replies made up by the plan; `end` says what follows them. */
  | { kind: 'frames'; frames: OptionFrame[]; end: 'ack' | 'stall' | 'close' }
  | { kind: 'stall' }
  | { kind: 'close' };

export interface ExportPlan {
  /** Export size as sent (u64): may exceed what a JavaScript number holds. */
  size: bigint;
  /** Transmission flags as sent. */
  flags: number;
  /** NBD_INFO_BLOCK_SIZE (minimum, preferred, maximum), sent after NBD_INFO_EXPORT when present. */
  blockSize?: readonly [number, number, number];
}

export type ExportNamePlan = { kind: 'good' } | { kind: 'close' } | { kind: 'truncated'; keep: number } | { kind: 'stall' };

export interface HandshakePlan {
  greeting: GreetingPlan;
  /** Offer NBD_FLAG_NO_ZEROES. */
  noZeroes: boolean;
  structuredReply: OptionPlan;
  setMetaContext: OptionPlan;
  go: OptionPlan;
  exportName: ExportNamePlan;
  list: OptionPlan;
  listMetaContext: OptionPlan;
  /** What follows NBD_OPT_ABORT. */
  abort: 'ack-and-close' | 'close' | 'ignore';
}

/** A position inside the request being answered: a fraction of its length, then a shift. */
export interface RelativeOffset {
  fraction: number;
  delta: number;
}

/** How a well-behaved server would answer, before mutations. */
export interface GoodShape {
  /** Cut points of a READ, as fractions of its length. */
  cuts: number[];
  /** Which pieces are sent as holes (when structured replies were negotiated). */
  holes: boolean[];
  /** Pieces in a shuffled order (a rotation and reversal, enough to reach every case that matters). */
  rotate: number;
  reverse: boolean;
  /** End with NBD_REPLY_TYPE_NONE instead of flagging the last chunk done. */
  finalNone: boolean;
  /** Block status: descriptor cut points as fractions of what is described. */
  descriptorCuts: number[];
  /** Block status: fraction of the request described (1 = all of it). */
  described: number;
  /** Flags of the block status descriptors, cycled. */
  statusFlags: number[];
  /** A simple reply where a structured one is optional (not for READ). */
  simpleWhenAllowed: boolean;
}

export type Mutation =
  | { kind: 'drop'; index: number }
  | { kind: 'duplicate'; index: number }
  | { kind: 'shift'; index: number; delta: number }
  | { kind: 'resize'; index: number; delta: number }
  | { kind: 'swap'; first: number; second: number }
  | { kind: 'done-early'; index: number }
  | { kind: 'no-done' }
  | { kind: 'cookie'; index: number; lie: 'unknown' | 'high-bits' | 'zero' | 'other-pending' }
  | { kind: 'magic'; index: number; magic: number }
  | { kind: 'type'; index: number; type: number }
  | { kind: 'declared-length'; index: number; delta: number }
  | { kind: 'huge-length'; index: number; length: number }
  | { kind: 'insert-error'; index: number; errno: number; message: string; messageLengthDelta: number; offset: 'none' | 'inside' | 'outside'; done: boolean }
  | { kind: 'insert-none'; index: number; done: boolean; length: number }
  | { kind: 'insert-simple'; index: number; errno: number; payload: 'exact' | 'none' }
  | { kind: 'insert-block-status'; index: number; context: 'ours' | 'unknown'; descriptors: Array<[number, number]>; done: boolean }
  | { kind: 'zero-length'; index: number }
  | { kind: 'descriptors'; index: number; change: 'zero' | 'past-end' | 'many' | 'none' | 'odd-length' }
  | { kind: 'context'; index: number; to: 'unknown' | 'duplicate' }
  | { kind: 'garbage'; index: number; bytes: Uint8Array };

export type ReplyPlan =
  | {
      kind: 'answer';
      shape: GoodShape;
      mutations: Mutation[];
      /** Milliseconds to wait before answering, so answers to requests overtake each other. */
      delayMs: number;
      /** What follows the frames: nothing, a stall mid-frame, or a hang-up mid-frame. */
      ending: { kind: 'normal' } | { kind: 'stall-mid-frame'; keep: number } | { kind: 'close-mid-frame'; keep: number };
    }
  | { kind: 'stall' }
  | { kind: 'close' }
  | { kind: 'garbage'; bytes: Uint8Array };

export interface ServerPlan {
  handshake: HandshakePlan;
  export: ExportPlan;
  /** Meta context ids the server hands out, one per context asked for, in order. */
  contextIds: number[];
  /** Answers by request number (counted over all connections); beyond the list, good answers. */
  replies: ReplyPlan[];
  /** What follows NBD_CMD_DISC. */
  afterDisconnect: 'close' | 'garbage-then-close' | 'stay';
}

/** A plan with nothing hostile in it. */
export function goodHandshake(): HandshakePlan {
  const good: OptionPlan = { kind: 'good' };
  return {
    greeting: { kind: 'good' },
    noZeroes: true,
    structuredReply: good,
    setMetaContext: good,
    go: good,
    exportName: { kind: 'good' },
    list: good,
    listMetaContext: good,
    abort: 'ack-and-close',
  };
}

export function goodShape(): GoodShape {
  return {
    cuts: [],
    holes: [false],
    rotate: 0,
    reverse: false,
    finalNone: false,
    descriptorCuts: [],
    described: 1,
    statusFlags: [0],
    simpleWhenAllowed: false,
  };
}
