import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import {
  CMD,
  DONE_FLAG,
  OPT,
  REP,
  REPLY_TYPE,
  SIMPLE_MAGIC,
  STRUCTURED_MAGIC,
  type GoodShape,
  type Mutation,
  type OptionFrame,
  type OptionPlan,
  type ReplyPlan,
  type ServerPlan,
} from './hostile-plan.js';

/**
 * An NBD server that follows a `ServerPlan`: it can greet wrongly, answer options with
 * lies, and answer requests with chunks that overlap, go missing, carry the wrong cookie
 * or length, or stop half-way. Everything it sends in the transmission phase is logged
 * frame by frame, with the requests it answers, so a test can work out what a correct
 * client must have made of it.
 */

const NBDMAGIC = Buffer.from('NBDMAGIC');
const IHAVEOPT = Buffer.from('IHAVEOPT');
const OLDSTYLE = Buffer.from('0000420281861253', 'hex');
const OPTION_REPLY_MAGIC = 0x3e889045565a9n;

export interface LoggedRequest {
  /** Order of arrival over all connections. */
  sequence: number;
  connection: number;
  type: number;
  flags: number;
  cookie: Buffer;
  offset: number;
  length: number;
}

/** One reply frame exactly as written; `cut` bytes of it when a hang-up or stall cut it short. */
export type LoggedFrame =
  | { kind: 'structured'; magic: number; flags: number; type: number; cookie: Buffer; declaredLength: number; body: Buffer; cut?: number }
  | { kind: 'simple'; magic: number; errno: number; cookie: Buffer; payload: Buffer; cut?: number }
  | { kind: 'garbage'; bytes: Buffer; cut?: number };

export type ConnectionEvent =
  | { kind: 'request'; request: LoggedRequest }
  | { kind: 'frame'; frame: LoggedFrame }
  /** The server stopped sending on this connection (a stall or a hang-up). */
  | { kind: 'end'; how: 'stall' | 'close' };

export interface ConnectionLog {
  id: number;
  /** What the handshake agreed on, as the server sees it. */
  structured: boolean;
  contexts: Map<number, string>;
  /** Transmission was entered. */
  transmitting: boolean;
  events: ConnectionEvent[];
  /** The client's side went away (its socket closed). */
  closed: boolean;
}

export interface HostileServer {
  path: string;
  connections: ConnectionLog[];
  requests: LoggedRequest[];
  /** Resolves once every connection the server accepted is closed, or after `ms`; says which. */
  allClosed(ms: number): Promise<boolean>;
  close(): Promise<void>;
}

/** Content the server reads as: a fixed pseudo-random pattern by offset. */
const PATTERN_PERIOD = 65_521;
const PATTERN = Buffer.from(Array.from({ length: PATTERN_PERIOD }, (_, i) => (i * 2_654_435_761) >>> 24));

export function patternAt(offset: number, length: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  let filled = 0;
  let at = offset % PATTERN_PERIOD;
  while (filled < length) {
    const take = Math.min(length - filled, PATTERN_PERIOD - at);
    PATTERN.copy(out, filled, at, at + take);
    filled += take;
    at = 0;
  }
  return out;
}

class SocketReader {
  private chunks: Buffer[] = [];
  private length = 0;
  private wake: (() => void) | undefined;
  private ended = false;

  constructor(socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.length += chunk.length;
      this.wake?.();
    });
    const end = (): void => {
      this.ended = true;
      this.wake?.();
    };
    socket.on('close', end);
    socket.on('end', end);
    socket.on('error', end);
  }

  async read(size: number): Promise<Buffer | undefined> {
    while (this.length < size) {
      if (this.ended) return undefined;
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = all.subarray(0, size);
    const rest = all.subarray(size);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.length = rest.length;
    return out;
  }
}

function optionReply(option: number, type: number, data: Uint8Array, declaredLength = data.length, badMagic = false): Buffer {
  const header = Buffer.alloc(20);
  header.writeBigUInt64BE(badMagic ? OPTION_REPLY_MAGIC ^ 0xffn : OPTION_REPLY_MAGIC, 0);
  header.writeUInt32BE(option >>> 0, 8);
  header.writeUInt32BE(type >>> 0, 12);
  header.writeUInt32BE(declaredLength >>> 0, 16);
  return Buffer.concat([header, data]);
}

function encodeInfoExport(size: bigint, flags: number): Buffer {
  const info = Buffer.alloc(12);
  info.writeUInt16BE(0, 0);
  info.writeBigUInt64BE(BigInt.asUintN(64, size), 2);
  info.writeUInt16BE(flags & 0xffff, 10);
  return info;
}

function encodeInfoBlockSize([minimum, preferred, maximum]: readonly [number, number, number]): Buffer {
  const info = Buffer.alloc(14);
  info.writeUInt16BE(3, 0);
  info.writeUInt32BE(minimum >>> 0, 2);
  info.writeUInt32BE(preferred >>> 0, 6);
  info.writeUInt32BE(maximum >>> 0, 10);
  return info;
}

function metaContextReply(id: number, name: string): Buffer {
  const text = Buffer.from(name);
  const data = Buffer.alloc(4 + text.length);
  data.writeUInt32BE(id >>> 0, 0);
  text.copy(data, 4);
  return data;
}

function parseQueries(data: Buffer): string[] {
  if (data.length < 8) return [];
  const nameLength = data.readUInt32BE(0);
  let at = 4 + nameLength;
  const count = data.readUInt32BE(at);
  at += 4;
  const queries: string[] = [];
  for (let i = 0; i < count && at + 4 <= data.length; i++) {
    const length = data.readUInt32BE(at);
    queries.push(data.toString('utf8', at + 4, at + 4 + length));
    at += 4 + length;
  }
  return queries;
}

/** A reply frame before it is written: what it says, and which of its header fields lie. */
type Draft = (
  | { kind: 'data'; offset: number; length: number }
  | { kind: 'hole'; offset: number; length: number }
  | { kind: 'none'; length: number }
  | { kind: 'block-status'; contextId: number; descriptors: Array<[number, number]>; extraBytes: number }
  | { kind: 'error'; errno: number; message: string; messageLengthDelta: number; offset: number | undefined }
  | { kind: 'simple'; errno: number; payload: 'exact' | 'none' }
  | { kind: 'garbage'; bytes: Uint8Array }
) & {
  done: boolean;
  cookie?: Buffer;
  magic?: number;
  type?: number;
  declaredDelta?: number;
  hugeLength?: number;
};

interface AnswerContext {
  request: LoggedRequest;
  structured: boolean;
  contexts: Map<number, string>;
  otherCookies: Buffer[];
}

const clampIndex = (index: number, length: number): number => (length === 0 ? 0 : Math.abs(index) % length);

function piecesOf(length: number, cuts: number[]): Array<[number, number]> {
  const points = [...new Set(cuts.map((cut) => Math.floor(cut * length)).filter((at) => at > 0 && at < length))].sort((a, b) => a - b);
  const bounds = [0, ...points, length];
  const pieces: Array<[number, number]> = [];
  for (let i = 0; i + 1 < bounds.length; i++) pieces.push([bounds[i]!, bounds[i + 1]! - bounds[i]!]);
  return pieces;
}

function reorder<T>(items: T[], shape: GoodShape): T[] {
  const turn = items.length === 0 ? 0 : shape.rotate % items.length;
  const rotated = [...items.slice(turn), ...items.slice(0, turn)];
  return shape.reverse ? rotated.reverse() : rotated;
}

/** What a well-behaved server sends for `request`, shaped by `shape`. */
function goodDrafts(context: AnswerContext, shape: GoodShape): Draft[] {
  const { request, structured } = context;
  if (request.type === CMD.READ) {
    if (!structured) return [{ kind: 'simple', errno: 0, payload: 'exact', done: true }];
    if (request.length === 0) return [{ kind: 'none', length: 0, done: true }];
    const pieces = reorder(piecesOf(request.length, shape.cuts), shape);
    const drafts: Draft[] = pieces.map(([at, length], i) => ({
      kind: shape.holes[i % shape.holes.length] ? 'hole' : 'data',
      offset: request.offset + at,
      length,
      done: false,
    }));
    return finish(drafts, shape);
  }
  if (request.type === CMD.BLOCK_STATUS) {
    if (!structured || context.contexts.size === 0) return [{ kind: 'simple', errno: 22, payload: 'none', done: true }];
    const described = Math.max(1, Math.min(request.length, Math.ceil(request.length * shape.described)));
    const drafts: Draft[] = [...context.contexts.keys()].map((contextId) => ({
      kind: 'block-status',
      contextId,
      descriptors: piecesOf(described, shape.descriptorCuts).map(([, length], i): [number, number] => [
        length,
        shape.statusFlags[i % shape.statusFlags.length]!,
      ]),
      extraBytes: 0,
      done: false,
    }));
    return finish(reorder(drafts, shape), shape);
  }
  if (!structured || shape.simpleWhenAllowed) return [{ kind: 'simple', errno: 0, payload: 'none', done: true }];
  return [{ kind: 'none', length: 0, done: true }];
}

function finish(drafts: Draft[], shape: GoodShape): Draft[] {
  if (shape.finalNone || drafts.length === 0) return [...drafts, { kind: 'none', length: 0, done: true }];
  drafts[drafts.length - 1]!.done = true;
  return drafts;
}

function unknownContextId(contexts: Map<number, string>): number {
  let id = 0x7fff_0000;
  while (contexts.has(id)) id++;
  return id;
}

function mutate(drafts: Draft[], mutation: Mutation, context: AnswerContext): Draft[] {
  const { request } = context;
  const out = [...drafts];
  const at = clampIndex('index' in mutation ? mutation.index : 0, out.length);
  const target = out[at];
  switch (mutation.kind) {
    case 'drop':
      out.splice(at, 1);
      return out;
    case 'duplicate':
      if (target) out.splice(at + 1, 0, { ...target });
      return out;
    case 'shift':
      if (target && (target.kind === 'data' || target.kind === 'hole')) out[at] = { ...target, offset: Math.max(0, target.offset + mutation.delta) };
      return out;
    case 'resize':
      // Holes cost nothing to claim; data is sent, so it stays near the request's size (a
      // chunk far longer than the request is what huge-length is for, without the bytes).
      if (target?.kind === 'hole') out[at] = { ...target, length: Math.max(0, target.length + mutation.delta) };
      if (target?.kind === 'data') out[at] = { ...target, length: Math.max(0, Math.min(request.length + 65_536, target.length + mutation.delta)) };
      if (target?.kind === 'block-status' && target.descriptors.length > 0) {
        const descriptors = target.descriptors.map(([length, flags]): [number, number] => [length, flags]);
        descriptors[0]![0] = Math.max(0, Math.min(0xffffffff, descriptors[0]![0] + mutation.delta));
        out[at] = { ...target, descriptors };
      }
      return out;
    case 'swap': {
      const first = clampIndex(mutation.first, out.length);
      const second = clampIndex(mutation.second, out.length);
      if (out.length > 1) [out[first], out[second]] = [out[second]!, out[first]!];
      return out;
    }
    case 'done-early':
      if (target) out[at] = { ...target, done: true };
      return out;
    case 'no-done':
      return out.filter((draft) => draft.kind !== 'none').map((draft) => ({ ...draft, done: false }));
    case 'cookie': {
      if (!target) return out;
      let cookie: Buffer = Buffer.from(request.cookie);
      if (mutation.lie === 'unknown') cookie.writeUInt32BE((cookie.readUInt32BE(4) + 0x8000_0000) >>> 0, 4);
      else if (mutation.lie === 'high-bits') cookie.writeUInt32BE(1, 0);
      else if (mutation.lie === 'zero') cookie = Buffer.alloc(8);
      else cookie = context.otherCookies.at(-1) ?? Buffer.from('00000000deadbeef', 'hex');
      out[at] = { ...target, cookie };
      return out;
    }
    case 'magic':
      if (target) out[at] = { ...target, magic: mutation.magic };
      return out;
    case 'type':
      if (target) out[at] = { ...target, type: mutation.type };
      return out;
    case 'declared-length':
      if (target) out[at] = { ...target, declaredDelta: mutation.delta };
      return out;
    case 'huge-length':
      if (target) out[at] = { ...target, hugeLength: mutation.length };
      return out;
    case 'insert-error': {
      const offset =
        mutation.offset === 'none'
          ? undefined
          : mutation.offset === 'inside'
            ? request.offset + Math.floor(request.length / 2)
            : request.offset + request.length + 1;
      out.splice(at, 0, {
        kind: 'error',
        errno: mutation.errno,
        message: mutation.message,
        messageLengthDelta: mutation.messageLengthDelta,
        offset,
        done: mutation.done,
      });
      return out;
    }
    case 'insert-none':
      out.splice(at, 0, { kind: 'none', length: mutation.length, done: mutation.done });
      return out;
    case 'insert-simple':
      out.splice(at, 0, { kind: 'simple', errno: mutation.errno, payload: mutation.payload, done: true });
      return out;
    case 'insert-block-status': {
      const ours = context.contexts.keys().next();
      const contextId = mutation.context === 'ours' && !ours.done ? ours.value : unknownContextId(context.contexts);
      out.splice(at, 0, { kind: 'block-status', contextId, descriptors: mutation.descriptors, extraBytes: 0, done: mutation.done });
      return out;
    }
    case 'zero-length':
      if (target && (target.kind === 'data' || target.kind === 'hole')) out[at] = { ...target, length: 0 };
      return out;
    case 'descriptors': {
      if (target?.kind !== 'block-status') return out;
      let descriptors = target.descriptors.map(([length, flags]): [number, number] => [length, flags]);
      let extraBytes = 0;
      if (mutation.change === 'zero') descriptors.splice(Math.floor(descriptors.length / 2), 0, [0, 1]);
      else if (mutation.change === 'past-end' && descriptors.length > 0) {
        const last = descriptors[descriptors.length - 1]!;
        last[0] = Math.min(0xffffffff, last[0] + request.length + 4096);
      } else if (mutation.change === 'many') {
        const count = 20_000;
        descriptors = Array.from({ length: count }, (_, i): [number, number] => [1, i % 3]);
      } else if (mutation.change === 'none') descriptors = [];
      else extraBytes = 4;
      out[at] = { ...target, descriptors, extraBytes };
      return out;
    }
    case 'context':
      if (target?.kind !== 'block-status') return out;
      if (mutation.to === 'unknown') out[at] = { ...target, contextId: unknownContextId(context.contexts) };
      else out.splice(at + 1, 0, { ...target, done: false });
      return out;
    case 'garbage':
      out.splice(at, 0, { kind: 'garbage', bytes: mutation.bytes, done: false });
      return out;
  }
}

/** The frame a draft becomes, and its bytes. */
function render(draft: Draft, request: LoggedRequest): { frame: LoggedFrame; bytes: Buffer } {
  const cookie = draft.cookie ?? request.cookie;
  if (draft.kind === 'garbage') {
    const bytes = Buffer.from(draft.bytes);
    return { frame: { kind: 'garbage', bytes }, bytes };
  }
  if (draft.kind === 'simple') {
    const magic = draft.magic ?? SIMPLE_MAGIC;
    const payload = draft.payload === 'exact' && draft.errno === 0 ? patternAt(request.offset, request.length) : Buffer.alloc(0);
    const header = Buffer.alloc(16);
    header.writeUInt32BE(magic >>> 0, 0);
    header.writeUInt32BE(draft.errno >>> 0, 4);
    cookie.copy(header, 8);
    return { frame: { kind: 'simple', magic, errno: draft.errno, cookie, payload }, bytes: Buffer.concat([header, payload]) };
  }
  let type: number;
  let body: Buffer;
  switch (draft.kind) {
    case 'data':
      type = REPLY_TYPE.OFFSET_DATA;
      body = Buffer.alloc(8 + draft.length);
      body.writeBigUInt64BE(BigInt(draft.offset), 0);
      patternAt(draft.offset, draft.length).copy(body, 8);
      break;
    case 'hole':
      type = REPLY_TYPE.OFFSET_HOLE;
      body = Buffer.alloc(12);
      body.writeBigUInt64BE(BigInt(draft.offset), 0);
      body.writeUInt32BE(Math.min(draft.length, 0xffffffff), 8);
      break;
    case 'none':
      type = REPLY_TYPE.NONE;
      body = Buffer.alloc(draft.length);
      break;
    case 'block-status':
      type = REPLY_TYPE.BLOCK_STATUS;
      body = Buffer.alloc(4 + 8 * draft.descriptors.length + draft.extraBytes);
      body.writeUInt32BE(draft.contextId >>> 0, 0);
      draft.descriptors.forEach(([length, flags], i) => {
        body.writeUInt32BE(length >>> 0, 4 + 8 * i);
        body.writeUInt32BE(flags >>> 0, 8 + 8 * i);
      });
      break;
    case 'error': {
      type = draft.offset === undefined ? REPLY_TYPE.ERROR : REPLY_TYPE.ERROR_OFFSET;
      const text = Buffer.from(draft.message);
      body = Buffer.alloc(6 + text.length + (draft.offset === undefined ? 0 : 8));
      body.writeUInt32BE(draft.errno >>> 0, 0);
      body.writeUInt16BE(Math.max(0, Math.min(0xffff, text.length + draft.messageLengthDelta)), 4);
      text.copy(body, 6);
      if (draft.offset !== undefined) body.writeBigUInt64BE(BigInt(draft.offset), 6 + text.length);
      break;
    }
  }
  type = draft.type ?? type;
  const magic = draft.magic ?? STRUCTURED_MAGIC;
  const flags = draft.done ? DONE_FLAG : 0;
  if (draft.hugeLength !== undefined) body = Buffer.alloc(0);
  const declaredLength = draft.hugeLength ?? Math.max(0, Math.min(0xffffffff, body.length + (draft.declaredDelta ?? 0)));
  const header = Buffer.alloc(20);
  header.writeUInt32BE(magic >>> 0, 0);
  header.writeUInt16BE(flags, 4);
  header.writeUInt16BE(type & 0xffff, 6);
  cookie.copy(header, 8);
  header.writeUInt32BE(declaredLength >>> 0, 16);
  return { frame: { kind: 'structured', magic, flags, type: type & 0xffff, cookie, declaredLength, body }, bytes: Buffer.concat([header, body]) };
}

export async function startHostileServer(dir: string, plan: ServerPlan, name = 'hostile.sock'): Promise<HostileServer> {
  const path = join(dir, name);
  const connections: ConnectionLog[] = [];
  const requests: LoggedRequest[] = [];
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const closeWaiters = new Set<() => void>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    const log: ConnectionLog = { id: connections.length, structured: false, contexts: new Map(), transmitting: false, events: [], closed: false };
    connections.push(log);
    socket.on('error', () => {});
    socket.on('close', () => {
      log.closed = true;
      sockets.delete(socket);
      if (sockets.size === 0) for (const wake of closeWaiters) wake();
    });
    void serve(socket, log).catch(() => socket.destroy());
  });

  const later = (ms: number, run: () => void): void => {
    if (ms <= 0) return run();
    const timer = setTimeout(() => {
      timers.delete(timer);
      run();
    }, ms);
    timers.add(timer);
  };

  async function serve(socket: Socket, log: ConnectionLog): Promise<void> {
    const reader = new SocketReader(socket);
    const write = (bytes: Uint8Array): void => {
      if (!socket.destroyed) socket.write(bytes);
    };
    const { handshake } = plan;
    const greeting = handshake.greeting;
    const flags = 1 | (handshake.noZeroes ? 2 : 0);
    const goodGreeting = Buffer.concat([NBDMAGIC, IHAVEOPT, Buffer.from([0, flags])]);
    switch (greeting.kind) {
      case 'good':
        write(goodGreeting);
        break;
      case 'bad-magic':
        write(Buffer.concat([Buffer.from('NBDMAGIX'), IHAVEOPT, Buffer.from([0, flags])]));
        break;
      case 'oldstyle': {
        const rest = Buffer.alloc(8 + 4 + 124);
        rest.writeBigUInt64BE(BigInt.asUintN(64, plan.export.size), 0);
        write(Buffer.concat([NBDMAGIC, OLDSTYLE, rest]));
        break;
      }
      case 'not-fixed-newstyle':
        write(Buffer.concat([NBDMAGIC, IHAVEOPT, Buffer.from([0, 0])]));
        break;
      case 'truncated':
        write(goodGreeting.subarray(0, greeting.keep % goodGreeting.length));
        socket.destroy();
        return;
      case 'silent':
        return;
      case 'garbage':
        write(greeting.bytes);
        return;
    }
    const clientFlags = await reader.read(4);
    if (!clientFlags) return;
    const clientNoZeroes = (clientFlags.readUInt32BE(0) & 2) !== 0;

    /** Answers one option by its plan; false when the connection is over for the server. */
    const answer = (option: number, optionPlan: OptionPlan, good: () => void): boolean => {
      switch (optionPlan.kind) {
        case 'good':
          good();
          return true;
        case 'refuse':
          write(optionReply(option, optionPlan.type, Buffer.from(optionPlan.message)));
          return true;
        case 'frames':
          for (const frame of optionPlan.frames) writeOptionFrame(option, frame);
          if (optionPlan.end === 'ack') {
            write(optionReply(option, REP.ACK, Buffer.alloc(0)));
            return true;
          }
          if (optionPlan.end === 'close') socket.destroy();
          return false;
        case 'stall':
          return false;
        case 'close':
          socket.destroy();
          return false;
      }
    };
    const writeOptionFrame = (option: number, frame: OptionFrame): void => {
      write(optionReply(frame.option ?? option, frame.type, frame.data, frame.declaredLength, frame.badMagic));
    };

    for (;;) {
      const header = await reader.read(16);
      if (!header) return;
      const option = header.readUInt32BE(8);
      const data = (await reader.read(header.readUInt32BE(12))) ?? Buffer.alloc(0);
      if (option === OPT.EXPORT_NAME) {
        const exportName = handshake.exportName;
        const answerBytes = Buffer.alloc(clientNoZeroes ? 10 : 134);
        answerBytes.writeBigUInt64BE(BigInt.asUintN(64, plan.export.size), 0);
        answerBytes.writeUInt16BE(plan.export.flags & 0xffff, 8);
        if (exportName.kind === 'good') {
          write(answerBytes);
          break;
        }
        if (exportName.kind === 'truncated') {
          write(answerBytes.subarray(0, exportName.keep % answerBytes.length));
          socket.destroy();
        } else if (exportName.kind === 'close') socket.destroy();
        return;
      }
      if (option === OPT.ABORT) {
        if (handshake.abort === 'ack-and-close') {
          write(optionReply(option, REP.ACK, Buffer.alloc(0)));
          socket.end();
        } else if (handshake.abort === 'close') socket.destroy();
        return;
      }
      let goOn = true;
      if (option === OPT.STRUCTURED_REPLY) {
        const structuredPlan = handshake.structuredReply;
        goOn = answer(option, structuredPlan, () => write(optionReply(option, REP.ACK, Buffer.alloc(0))));
        log.structured =
          structuredPlan.kind === 'good' ||
          (structuredPlan.kind === 'frames' && (structuredPlan.frames[0]?.type ?? (structuredPlan.end === 'ack' ? REP.ACK : 0)) === REP.ACK);
      } else if (option === OPT.SET_META_CONTEXT || option === OPT.LIST_META_CONTEXT) {
        const queries = parseQueries(data);
        const contextPlan = option === OPT.SET_META_CONTEXT ? handshake.setMetaContext : handshake.listMetaContext;
        goOn = answer(option, contextPlan, () => {
          queries.forEach((query, i) => {
            const id = option === OPT.SET_META_CONTEXT ? (plan.contextIds[i] ?? 1000 + i) : 0;
            if (option === OPT.SET_META_CONTEXT) log.contexts.set(id, query);
            write(optionReply(option, REP.META_CONTEXT, metaContextReply(id, query)));
          });
          write(optionReply(option, REP.ACK, Buffer.alloc(0)));
        });
        if (option === OPT.SET_META_CONTEXT && contextPlan.kind === 'frames') {
          for (const frame of contextPlan.frames) {
            if (frame.type === REP.META_CONTEXT && frame.data.length >= 4) {
              const bytes = Buffer.from(frame.data);
              log.contexts.set(bytes.readUInt32BE(0), bytes.toString('utf8', 4));
            }
          }
        }
      } else if (option === OPT.GO) {
        const goPlan = handshake.go;
        let entered = false;
        goOn = answer(option, goPlan, () => {
          write(optionReply(option, REP.INFO, encodeInfoExport(plan.export.size, plan.export.flags)));
          if (plan.export.blockSize) write(optionReply(option, REP.INFO, encodeInfoBlockSize(plan.export.blockSize)));
          write(optionReply(option, REP.ACK, Buffer.alloc(0)));
          entered = true;
        });
        if (goPlan.kind === 'frames' && goPlan.end === 'ack') entered = true;
        if (entered) break;
      } else if (option === OPT.LIST) {
        goOn = answer(option, handshake.list, () => {
          for (const [exportName, description] of [
            ['', 'the default export'],
            ['other', ''],
          ] as const) {
            const nameBytes = Buffer.from(exportName);
            const entry = Buffer.concat([Buffer.alloc(4), nameBytes, Buffer.from(description)]);
            entry.writeUInt32BE(nameBytes.length, 0);
            write(optionReply(option, REP.SERVER, entry));
          }
          write(optionReply(option, REP.ACK, Buffer.alloc(0)));
        });
      } else {
        write(optionReply(option, REP.ERR_UNSUP, Buffer.alloc(0)));
      }
      if (!goOn) {
        log.events.push({ kind: 'end', how: socket.destroyed ? 'close' : 'stall' });
        return;
      }
    }

    log.transmitting = true;
    const received: Buffer[] = [];
    let over = false;
    const end = (how: 'stall' | 'close'): void => {
      if (over) return;
      over = true;
      log.events.push({ kind: 'end', how });
      if (how === 'close') socket.destroy();
    };
    const send = (frame: LoggedFrame, bytes: Buffer, cut?: number): void => {
      if (over) return;
      if (cut === undefined) {
        log.events.push({ kind: 'frame', frame });
        write(bytes);
        return;
      }
      const keep = cut % Math.max(1, bytes.length);
      log.events.push({ kind: 'frame', frame: { ...frame, cut: keep } });
      write(bytes.subarray(0, keep));
    };
    const respond = (request: LoggedRequest, replyPlan: ReplyPlan): void => {
      if (over) return;
      switch (replyPlan.kind) {
        case 'stall':
          return end('stall');
        case 'close':
          return end('close');
        case 'garbage': {
          const bytes = Buffer.from(replyPlan.bytes);
          return send({ kind: 'garbage', bytes }, bytes);
        }
        case 'answer': {
          const context: AnswerContext = {
            request,
            structured: log.structured,
            contexts: log.contexts,
            otherCookies: received.filter((cookie) => !cookie.equals(request.cookie)),
          };
          let drafts = goodDrafts(context, replyPlan.shape);
          for (const mutation of replyPlan.mutations) drafts = mutate(drafts, mutation, context);
          const rendered = drafts.map((draft) => render(draft, request));
          const ending = replyPlan.ending;
          rendered.forEach(({ frame, bytes }, i) => {
            const last = i === rendered.length - 1;
            send(frame, bytes, last && ending.kind !== 'normal' ? ending.keep : undefined);
          });
          if (ending.kind === 'stall-mid-frame') end('stall');
          else if (ending.kind === 'close-mid-frame') end('close');
          return;
        }
      }
    };

    for (;;) {
      const header = await reader.read(28);
      if (!header) return;
      const request: LoggedRequest = {
        sequence: requests.length,
        connection: log.id,
        flags: header.readUInt16BE(4),
        type: header.readUInt16BE(6),
        cookie: Buffer.from(header.subarray(8, 16)),
        offset: Number(header.readBigUInt64BE(16)),
        length: header.readUInt32BE(24),
      };
      if (request.type === CMD.WRITE && !(await reader.read(request.length))) return;
      if (request.type === CMD.DISC) {
        if (plan.afterDisconnect === 'close') socket.end();
        else if (plan.afterDisconnect === 'garbage-then-close') {
          write(Buffer.from('garbage after the disconnect request'));
          socket.end();
        }
        return;
      }
      requests.push(request);
      received.push(request.cookie);
      log.events.push({ kind: 'request', request });
      const replyPlan = plan.replies[request.sequence] ?? {
        kind: 'answer',
        shape: { ...DEFAULT_SHAPE },
        mutations: [],
        delayMs: 0,
        ending: { kind: 'normal' },
      };
      later(replyPlan.kind === 'answer' ? replyPlan.delayMs : 0, () => respond(request, replyPlan));
    }
  }

  await new Promise<void>((resolve) => server.listen(path, resolve));
  return {
    path,
    connections,
    requests,
    allClosed(ms) {
      if (sockets.size === 0) return Promise.resolve(true);
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          closeWaiters.delete(wake);
          resolve(sockets.size === 0);
        }, ms);
        const wake = (): void => {
          clearTimeout(timer);
          closeWaiters.delete(wake);
          resolve(true);
        };
        closeWaiters.add(wake);
      });
    },
    close() {
      for (const timer of timers) clearTimeout(timer);
      for (const socket of sockets) socket.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const DEFAULT_SHAPE: GoodShape = {
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
