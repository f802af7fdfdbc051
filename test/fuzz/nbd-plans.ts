/**
 * fast-check arbitraries for hostile NBD servers (see test/nbd/hostile-plan.ts) and for
 * what a client does against them. Hostile choices are mixed into mostly well-behaved
 * plans: a fault deep in a session is only reached if the session gets that far.
 */
import fc from 'fast-check';
import {
  goodHandshake,
  goodShape,
  OPT,
  REP,
  REPLY_TYPE,
  SIMPLE_MAGIC,
  STRUCTURED_MAGIC,
  type ExportPlan,
  type GoodShape,
  type GreetingPlan,
  type HandshakePlan,
  type Mutation,
  type OptionFrame,
  type OptionPlan,
  type ReplyPlan,
  type ServerPlan,
} from '../nbd/hostile-plan.js';

export const MiB = 1024 * 1024;
const U32 = 0xffffffff;

/** Transmission flags: HAS_FLAGS, READ_ONLY, SEND_FLUSH, SEND_FUA, SEND_TRIM, SEND_WRITE_ZEROES, SEND_DF, CAN_MULTI_CONN. */
const FLAG_BITS = [1, 2, 4, 8, 32, 64, 128, 256];

const bytes = (maxLength: number): fc.Arbitrary<Uint8Array> => fc.uint8Array({ maxLength });
const text = fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: 'grapheme', maxLength: 20 }), fc.constant('x'.repeat(5000)));

const interestingSize = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 1, max: 8192 }).map((sectors) => BigInt(sectors * 512)) },
  { weight: 2, arbitrary: fc.integer({ min: 1, max: 4 * MiB }).map(BigInt) },
  { weight: 1, arbitrary: fc.constant(0n) },
  { weight: 1, arbitrary: fc.constantFrom(2n ** 40n, 2n ** 40n + 1n, BigInt(Number.MAX_SAFE_INTEGER), 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n) },
);

const blockSizeValue = fc.oneof(fc.constantFrom(0, 1, 512, 4096, 65536, 131072, 32 * MiB, 64 * MiB, U32, 3, 1000), fc.integer({ min: 0, max: U32 }));

const exportPlan: fc.Arbitrary<ExportPlan> = fc.record(
  {
    size: interestingSize,
    flags: fc.oneof(
      { weight: 4, arbitrary: fc.subarray(FLAG_BITS).map((bits) => bits.reduce((all, bit) => all | bit, 1)) },
      { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) },
    ),
    blockSize: fc.oneof(
      { weight: 3, arbitrary: fc.constant(undefined) },
      {
        weight: 2,
        arbitrary: fc.constantFrom([1, 4096, U32] as const, [512, 4096, 32 * MiB] as const, [4096, 65536, 1 * MiB] as const, [512, 512, 512] as const),
      },
      { weight: 1, arbitrary: fc.tuple(blockSizeValue, blockSizeValue, blockSizeValue) },
    ),
  },
  { requiredKeys: ['size', 'flags'] },
);

const greeting: fc.Arbitrary<GreetingPlan> = fc.oneof(
  { weight: 30, arbitrary: fc.constant({ kind: 'good' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'bad-magic' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'oldstyle' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'not-fixed-newstyle' as const }) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 17 }).map((keep) => ({ kind: 'truncated' as const, keep })) },
  { weight: 1, arbitrary: fc.constant({ kind: 'silent' as const }) },
  { weight: 1, arbitrary: bytes(64).map((garbage) => ({ kind: 'garbage' as const, bytes: garbage })) },
);

function info(size: bigint, flags: number): Uint8Array {
  const data = Buffer.alloc(12);
  data.writeBigUInt64BE(BigInt.asUintN(64, size), 2);
  data.writeUInt16BE(flags & 0xffff, 10);
  return data;
}

function blockSizeInfo(minimum: number, preferred: number, maximum: number): Uint8Array {
  const data = Buffer.alloc(14);
  data.writeUInt16BE(3, 0);
  data.writeUInt32BE(minimum >>> 0, 2);
  data.writeUInt32BE(preferred >>> 0, 6);
  data.writeUInt32BE(maximum >>> 0, 10);
  return data;
}

function metaContext(id: number, name: string): Uint8Array {
  return Buffer.concat([Buffer.from([id >>> 24, (id >>> 16) & 0xff, (id >>> 8) & 0xff, id & 0xff]), Buffer.from(name)]);
}

/** Replies a server might make up for an option, near the valid ones. */
function optionFrame(option: number): fc.Arbitrary<OptionFrame> {
  const plain = (type: number, data: fc.Arbitrary<Uint8Array>): fc.Arbitrary<OptionFrame> => data.map((payload) => ({ type, data: payload }));
  const specific: Array<fc.Arbitrary<OptionFrame>> = [];
  if (option === OPT.GO) {
    specific.push(
      fc.tuple(interestingSize, fc.integer({ min: 0, max: 0xffff })).map(([size, flags]) => ({ type: REP.INFO, data: info(size, flags) })),
      fc.tuple(blockSizeValue, blockSizeValue, blockSizeValue).map(([a, b, c]) => ({ type: REP.INFO, data: blockSizeInfo(a, b, c) })),
      plain(REP.INFO, bytes(3)),
      fc.integer({ min: 4, max: 0xffff }).map((infoType) => ({ type: REP.INFO, data: Buffer.from([infoType >> 8, infoType & 0xff, 0, 0]) })),
    );
  }
  if (option === OPT.SET_META_CONTEXT || option === OPT.LIST_META_CONTEXT) {
    specific.push(
      fc.tuple(fc.constantFrom(0, 1, 7, U32), fc.constantFrom('base:allocation', 'qemu:dirty-bitmap:fuzz', 'x-other:thing', '')).map(([id, name]) => ({
        type: REP.META_CONTEXT,
        data: metaContext(id, name),
      })),
      plain(REP.META_CONTEXT, bytes(3)),
    );
  }
  if (option === OPT.LIST) {
    specific.push(
      fc.tuple(fc.integer({ min: 0, max: 64 }), fc.string({ maxLength: 20 })).map(([declared, name]) => {
        const encoded = Buffer.from(name);
        const data = Buffer.alloc(4 + encoded.length);
        data.writeUInt32BE(declared, 0);
        encoded.copy(data, 4);
        return { type: REP.SERVER, data };
      }),
      plain(REP.SERVER, bytes(3)),
    );
  }
  const generic: fc.Arbitrary<OptionFrame> = fc.record(
    {
      badMagic: fc.boolean(),
      option: fc.constantFrom(OPT.GO, OPT.LIST, OPT.STRUCTURED_REPLY, 99),
      type: fc.oneof(fc.constantFrom<number>(...Object.values(REP)), fc.integer({ min: 0, max: U32 })),
      data: bytes(32),
      declaredLength: fc.oneof(fc.integer({ min: 0, max: 64 }), fc.constantFrom(1024 * 1024 + 1, U32)),
    },
    { requiredKeys: ['type', 'data'] },
  );
  return specific.length > 0 ? fc.oneof({ weight: 3, arbitrary: fc.oneof(...specific) }, { weight: 1, arbitrary: generic }) : generic;
}

function optionPlan(option: number): fc.Arbitrary<OptionPlan> {
  return fc.oneof(
    { weight: 24, arbitrary: fc.constant({ kind: 'good' as const }) },
    {
      weight: 2,
      arbitrary: fc
        .tuple(
          fc.constantFrom<number>(
            REP.ERR_UNSUP,
            REP.ERR_UNSUP,
            REP.ERR_POLICY,
            REP.ERR_INVALID,
            REP.ERR_UNKNOWN,
            REP.ERR_SHUTDOWN,
            REP.ACK,
            REP.INFO,
            0x80000099,
          ),
          text,
        )
        .map(([type, message]) => ({ kind: 'refuse' as const, type, message })),
    },
    {
      weight: 2,
      arbitrary: fc
        .tuple(fc.array(optionFrame(option), { maxLength: 4 }), fc.constantFrom('ack' as const, 'ack' as const, 'stall' as const, 'close' as const))
        .map(([frames, end]) => ({ kind: 'frames' as const, frames, end })),
    },
    { weight: 1, arbitrary: fc.constant({ kind: 'stall' as const }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'close' as const }) },
  );
}

const handshakePlan: fc.Arbitrary<HandshakePlan> = fc.record({
  greeting,
  noZeroes: fc.boolean(),
  structuredReply: optionPlan(OPT.STRUCTURED_REPLY),
  setMetaContext: optionPlan(OPT.SET_META_CONTEXT),
  go: optionPlan(OPT.GO),
  exportName: fc.oneof(
    { weight: 6, arbitrary: fc.constant({ kind: 'good' as const }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'close' as const }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'stall' as const }) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 133 }).map((keep) => ({ kind: 'truncated' as const, keep })) },
  ),
  list: optionPlan(OPT.LIST),
  listMetaContext: optionPlan(OPT.LIST_META_CONTEXT),
  abort: fc.constantFrom('ack-and-close' as const, 'close' as const, 'ignore' as const),
});

/** A fraction in [0, 1]; fc.double would crowd near 0 and make every range empty. */
const fraction = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 0, max: 1024 }).map((n) => n / 1024) },
  { weight: 1, arbitrary: fc.constantFrom(0, 0.5, 1) },
);

const shape: fc.Arbitrary<GoodShape> = fc.record({
  cuts: fc.array(fraction, { maxLength: 6 }),
  holes: fc.array(fc.boolean(), { minLength: 1, maxLength: 4 }),
  rotate: fc.nat({ max: 7 }),
  reverse: fc.boolean(),
  finalNone: fc.boolean(),
  descriptorCuts: fc.array(fraction, { maxLength: 6 }),
  described: fc.oneof({ weight: 3, arbitrary: fc.constant(1) }, { weight: 1, arbitrary: fc.integer({ min: 256, max: 1024 }).map((n) => n / 1024) }),
  statusFlags: fc.array(fc.constantFrom(0, 1, 2, 3), { minLength: 1, maxLength: 4 }),
  simpleWhenAllowed: fc.boolean(),
});

const index = fc.nat({ max: 8 });
const delta = fc.oneof(fc.constantFrom(-1, 1, -512, 512, -4096, 4096, 2 ** 31), fc.integer({ min: -70_000, max: 70_000 }));

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  index.map((i) => ({ kind: 'drop' as const, index: i })),
  index.map((i) => ({ kind: 'duplicate' as const, index: i })),
  fc.tuple(index, delta).map(([i, d]) => ({ kind: 'shift' as const, index: i, delta: d })),
  fc.tuple(index, delta).map(([i, d]) => ({ kind: 'resize' as const, index: i, delta: d })),
  fc.tuple(index, index).map(([first, second]) => ({ kind: 'swap' as const, first, second })),
  index.map((i) => ({ kind: 'done-early' as const, index: i })),
  fc.constant({ kind: 'no-done' as const }),
  fc
    .tuple(index, fc.constantFrom('unknown' as const, 'high-bits' as const, 'zero' as const, 'other-pending' as const))
    .map(([i, lie]) => ({ kind: 'cookie' as const, index: i, lie })),
  fc
    .tuple(index, fc.constantFrom(0, 0xdeadbeef, SIMPLE_MAGIC, STRUCTURED_MAGIC, 0x25609513))
    .map(([i, magic]) => ({ kind: 'magic' as const, index: i, magic })),
  fc
    .tuple(index, fc.oneof(fc.constantFrom<number>(...Object.values(REPLY_TYPE), 3, 4, 6, 0x8003, 0x7fff, 0xffff), fc.integer({ min: 0, max: 0xffff })))
    .map(([i, type]) => ({ kind: 'type' as const, index: i, type })),
  fc
    .tuple(index, fc.oneof(fc.constantFrom(-8, -1, 1, 4, 8), fc.integer({ min: -100, max: 100 })))
    .map(([i, d]) => ({ kind: 'declared-length' as const, index: i, delta: d })),
  fc
    .tuple(index, fc.constantFrom(U32, 32 * MiB + 4097, 32 * MiB + 4096, 0x7fffffff, 65_536 + 15))
    .map(([i, length]) => ({ kind: 'huge-length' as const, index: i, length })),
  fc
    .record({
      index,
      errno: fc.constantFrom(0, 1, 5, 22, 28, 75, 95, 108, 4711),
      message: text,
      messageLengthDelta: fc.constantFrom(0, 0, 1, 100, -1),
      offset: fc.constantFrom('none' as const, 'inside' as const, 'outside' as const),
      done: fc.boolean(),
    })
    .map((fields) => ({ kind: 'insert-error' as const, ...fields })),
  fc.record({ index, done: fc.boolean(), length: fc.constantFrom(0, 0, 4) }).map((fields) => ({ kind: 'insert-none' as const, ...fields })),
  fc
    .record({ index, errno: fc.constantFrom(0, 5, 22), payload: fc.constantFrom('exact' as const, 'none' as const) })
    .map((fields) => ({ kind: 'insert-simple' as const, ...fields })),
  fc
    .record({
      index,
      context: fc.constantFrom('ours' as const, 'unknown' as const),
      descriptors: fc.array(fc.tuple(fc.integer({ min: 0, max: 2 * MiB }), fc.nat({ max: 3 })), { maxLength: 4 }),
      done: fc.boolean(),
    })
    .map((fields) => ({ kind: 'insert-block-status' as const, ...fields })),
  index.map((i) => ({ kind: 'zero-length' as const, index: i })),
  fc
    .tuple(index, fc.constantFrom('zero' as const, 'past-end' as const, 'past-end' as const, 'many' as const, 'none' as const, 'odd-length' as const))
    .map(([i, change]) => ({ kind: 'descriptors' as const, index: i, change })),
  fc.tuple(index, fc.constantFrom('unknown' as const, 'duplicate' as const)).map(([i, to]) => ({ kind: 'context' as const, index: i, to })),
  fc.tuple(index, bytes(40)).map(([i, garbage]) => ({ kind: 'garbage' as const, index: i, bytes: garbage })),
);

const replyPlan: fc.Arbitrary<ReplyPlan> = fc.oneof(
  {
    weight: 30,
    arbitrary: fc.record({
      kind: fc.constant('answer' as const),
      shape,
      mutations: fc.oneof({ weight: 2, arbitrary: fc.constant<Mutation[]>([]) }, { weight: 1, arbitrary: fc.array(mutation, { minLength: 1, maxLength: 3 }) }),
      delayMs: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 4 }) }),
      ending: fc.oneof(
        { weight: 20, arbitrary: fc.constant({ kind: 'normal' as const }) },
        { weight: 1, arbitrary: fc.nat({ max: 200 }).map((keep) => ({ kind: 'stall-mid-frame' as const, keep })) },
        { weight: 1, arbitrary: fc.nat({ max: 200 }).map((keep) => ({ kind: 'close-mid-frame' as const, keep })) },
      ),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ kind: 'stall' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'close' as const }) },
  { weight: 1, arbitrary: bytes(64).map((garbage) => ({ kind: 'garbage' as const, bytes: garbage })) },
);

const distinctIds = fc.uniqueArray(fc.oneof(fc.nat({ max: 10 }), fc.constant(U32)), { minLength: 2, maxLength: 2 });

/** Replies that mostly carry a fault: for plans whose handshake goes well. */
const faultyReply: fc.Arbitrary<ReplyPlan> = fc.oneof(
  { weight: 1, arbitrary: replyPlan },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('answer' as const),
      shape,
      mutations: fc.array(mutation, { minLength: 1, maxLength: 3 }),
      delayMs: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 4 }) }),
      ending: fc.constant({ kind: 'normal' as const }),
    }),
  },
);

const afterDisconnect = fc.constantFrom('close' as const, 'garbage-then-close' as const, 'stay' as const);

/** The handshake goes wrong (and maybe later answers too). */
const hostileHandshake: fc.Arbitrary<ServerPlan> = fc.record({
  handshake: handshakePlan,
  export: exportPlan,
  contextIds: distinctIds,
  replies: fc.array(replyPlan, { maxLength: 12 }),
  afterDisconnect,
});

/** The handshake goes right, then answers go wrong: well-behaved ones first, so some calls get far. */
const hostileTransmission: fc.Arbitrary<ServerPlan> = fc.record({
  handshake: fc.constant(goodHandshake()),
  export: exportPlan,
  contextIds: distinctIds,
  replies: fc.tuple(fc.array(replyPlan, { maxLength: 2 }), fc.array(faultyReply, { minLength: 1, maxLength: 10 })).map(([first, then]) => [...first, ...then]),
  afterDisconnect,
});

const hostilePlan: fc.Arbitrary<ServerPlan> = fc.oneof({ weight: 1, arbitrary: hostileHandshake }, { weight: 2, arbitrary: hostileTransmission });

/** A server that does nothing wrong: whatever the client does must then work. */
const cleanPlan: fc.Arbitrary<ServerPlan> = fc.record({
  handshake: fc.constant(goodHandshake()),
  export: fc.record(
    {
      size: fc.integer({ min: 1, max: 4096 }).map((sectors) => BigInt(sectors * 512)),
      flags: fc.subarray(FLAG_BITS).map((bits) => bits.reduce((all, bit) => all | bit, 1)),
      blockSize: fc.option(fc.constantFrom([1, 4096, U32] as const, [512, 4096, 32 * MiB] as const), { nil: undefined }),
    },
    { requiredKeys: ['size', 'flags'] },
  ),
  contextIds: distinctIds,
  replies: fc.array(
    fc.record({
      kind: fc.constant('answer' as const),
      shape,
      mutations: fc.constant<Mutation[]>([]),
      delayMs: fc.integer({ min: 0, max: 2 }),
      ending: fc.constant({ kind: 'normal' as const }),
    }),
    { maxLength: 12 },
  ),
  afterDisconnect,
});

export const serverPlan: fc.Arbitrary<{ clean: boolean; plan: ServerPlan }> = fc.oneof(
  { weight: 3, arbitrary: hostilePlan.map((plan) => ({ clean: false, plan })) },
  { weight: 1, arbitrary: cleanPlan.map((plan) => ({ clean: true, plan })) },
);

export interface ClientConfig {
  connections: number;
  requestsPerConnection: number;
  maxBytesInFlight: number;
  requestSize: number;
  metaContexts: string[];
  structuredReplies: boolean;
}

export const clientConfig: fc.Arbitrary<ClientConfig> = fc.record({
  connections: fc.constantFrom(1, 1, 2, 4),
  requestsPerConnection: fc.constantFrom(1, 2, 16),
  maxBytesInFlight: fc.constantFrom(64 * 1024, 1 * MiB, 4 * MiB),
  requestSize: fc.constantFrom(4096, 65536, 1 * MiB),
  metaContexts: fc.constantFrom(['base:allocation'], ['base:allocation', 'qemu:dirty-bitmap:fuzz'], ['qemu:dirty-bitmap:fuzz']),
  structuredReplies: fc.oneof({ weight: 9, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
});

/** Where a command acts: fractions of the export, turned into bytes by the runner. */
export interface Span {
  at: number;
  length: number;
  /** Off the end of the export on purpose: the client must refuse with a RangeError. */
  outside: boolean;
}

export type ClientCommand =
  | { kind: 'read'; span: Span; signalMs: number | undefined }
  | { kind: 'extents'; context: 'base:allocation' | 'qemu:dirty-bitmap:fuzz'; span: Span | undefined; signalMs: number | undefined }
  | { kind: 'chunks'; span: Span | undefined; reuseMemory: boolean; signalMs: number | undefined }
  | { kind: 'write'; span: Span; signalMs: number | undefined }
  | { kind: 'flush' }
  | { kind: 'list-exports' }
  | { kind: 'list-meta-contexts' }
  | { kind: 'close' };

const span: fc.Arbitrary<Span> = fc.record({
  at: fraction,
  length: fraction,
  outside: fc.oneof({ weight: 15, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
});
const signalMs = fc.oneof({ weight: 5, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 40 }) });

export const clientCommand: fc.Arbitrary<ClientCommand> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('read' as const), span, signalMs }) },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('extents' as const),
      context: fc.constantFrom('base:allocation' as const, 'qemu:dirty-bitmap:fuzz' as const),
      span: fc.option(span, { nil: undefined }),
      signalMs,
    }),
  },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('chunks' as const), span: fc.option(span, { nil: undefined }), reuseMemory: fc.boolean(), signalMs }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('write' as const), span, signalMs }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'flush' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'list-exports' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'list-meta-contexts' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'close' as const }) },
);

export const clientCommands = fc.array(clientCommand, { minLength: 1, maxLength: 5 });

export { goodShape };
