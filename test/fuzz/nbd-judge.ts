/**
 * A second reading of what a hostile server sent, frame by frame, with the rules of
 * proto.md written out plainly: which requests a correct client may resolve, and with
 * what content. It reads frames the server logged with their true boundaries, so it
 * needs no stream parser; where a frame lies about its own length the bytes that follow
 * mean whatever the client makes of them, and the judge says so ('unknown').
 *
 * Where the protocol leaves a choice, the judge follows the client's documented one:
 * a simple reply to a READ is accepted after structured replies were negotiated, block
 * status descriptors running past the request are clipped, and an answer may describe
 * less than was asked (the client asks again).
 */
import type { ConnectionLog, LoggedFrame, LoggedRequest } from '../nbd/hostile-server.js';
import { CMD, DONE_FLAG, REPLY_TYPE, SIMPLE_MAGIC, STRUCTURED_MAGIC } from '../nbd/hostile-plan.js';

const MAX_REPLY_CHUNK = 32 * 1024 * 1024 + 4096;
const MAX_ERROR_CHUNK = 4 + 2 + 0xffff + 8;
const MAX_READ_PIECES = 4096;
const MAX_EXTENTS_PER_ANSWER = 65_536;

export interface JudgedExtent {
  offset: number;
  length: number;
  flags: number;
}

export type Verdict =
  /** May resolve, and if it does, with exactly this. */
  | { outcome: 'resolved'; content: Buffer | undefined; extents: Map<number, JudgedExtent[]> }
  /** Must not resolve: an error reply, a protocol violation, or no complete answer. */
  | { outcome: 'rejected'; why: string }
  /** The server's framing lied before this request finished: anything typed goes. */
  | { outcome: 'unknown' };

interface Open {
  request: LoggedRequest;
  starts: number[];
  ends: number[];
  covered: number;
  pieces: Array<{ offset: number; data: Buffer | undefined; length: number }>;
  error: boolean;
  answered: Set<number>;
  extents: Map<number, JudgedExtent[]>;
  /** Structured chunks came for it: a simple reply may not follow. */
  structured: boolean;
}

const key = (cookie: Buffer): string => cookie.toString('hex');

/** Adds [start, start + length) to a request's content; false when it overlaps (or scatters). */
function cover(open: Open, start: number, length: number): boolean {
  const end = start + length;
  for (let i = 0; i < open.starts.length; i++) if (open.starts[i]! < end && open.ends[i]! > start) return false;
  open.starts.push(start);
  open.ends.push(end);
  // Merge touching ranges so the piece count matches the client's bookkeeping.
  const order = open.starts.map((s, i) => [s, open.ends[i]!] as const).sort((a, b) => a[0] - b[0]);
  const merged: Array<[number, number]> = [];
  for (const [s, e] of order) {
    const last = merged.at(-1);
    if (last && last[1] === s) last[1] = e;
    else merged.push([s, e]);
  }
  if (merged.length > MAX_READ_PIECES) return false;
  open.starts = merged.map(([s]) => s);
  open.ends = merged.map(([, e]) => e);
  open.covered += length;
  return true;
}

function decode(descriptors: Buffer, offset: number, end: number): JudgedExtent[] {
  const extents: JudgedExtent[] = [];
  let at = offset;
  for (let i = 0; i + 8 <= descriptors.length && at < end && extents.length < MAX_EXTENTS_PER_ANSWER; i += 8) {
    const length = Math.min(descriptors.readUInt32BE(i), end - at);
    extents.push({ offset: at, length, flags: descriptors.readUInt32BE(i + 4) });
    at += length;
  }
  return extents;
}

/** Judges every request of one connection; `structured` is what the client negotiated on it. */
export function judgeConnection(log: ConnectionLog, structured: boolean, verdicts: Map<number, Verdict>): void {
  const open = new Map<string, Open>();
  // An object, not a variable: the closures below change it behind the loop's back.
  const connection: { state: 'live' | 'dead' | 'unknown'; deathCause: string } = { state: 'live', deathCause: '' };
  const die = (why: string): void => {
    connection.state = 'dead';
    connection.deathCause = why;
    for (const entry of open.values()) verdicts.set(entry.request.sequence, { outcome: 'rejected', why: `connection broken: ${why}` });
    open.clear();
  };
  const lose = (): void => {
    connection.state = 'unknown';
    for (const entry of open.values()) verdicts.set(entry.request.sequence, { outcome: 'unknown' });
    open.clear();
  };
  const complete = (entry: Open): void => {
    open.delete(key(entry.request.cookie));
    const { request } = entry;
    if (request.type === CMD.READ && !entry.error && entry.covered !== request.length) {
      die(`READ answered with ${entry.covered} of ${request.length} bytes`);
      verdicts.set(request.sequence, { outcome: 'rejected', why: 'incomplete READ' });
      return;
    }
    if (entry.error) {
      verdicts.set(request.sequence, { outcome: 'rejected', why: 'error reply' });
      return;
    }
    let content: Buffer | undefined;
    if (request.type === CMD.READ) {
      content = Buffer.alloc(request.length);
      for (const piece of entry.pieces) if (piece.data) piece.data.copy(content, piece.offset - request.offset);
    }
    verdicts.set(request.sequence, { outcome: 'resolved', content, extents: entry.extents });
  };

  for (const event of log.events) {
    if (event.kind === 'request') {
      const { request } = event;
      if (connection.state === 'dead')
        verdicts.set(request.sequence, { outcome: 'rejected', why: `sent after the connection broke: ${connection.deathCause}` });
      else if (connection.state === 'unknown') verdicts.set(request.sequence, { outcome: 'unknown' });
      else
        open.set(key(request.cookie), {
          request,
          starts: [],
          ends: [],
          covered: 0,
          pieces: [],
          error: false,
          answered: new Set(),
          extents: new Map(),
          structured: false,
        });
      continue;
    }
    if (connection.state !== 'live') continue;
    if (event.kind === 'end') {
      die(`the server ${event.how === 'stall' ? 'stalled' : 'hung up'}`);
      continue;
    }
    judgeFrame(event.frame);
  }
  // Requests still waiting when the log ends were never answered: they cannot resolve.
  for (const entry of open.values()) verdicts.set(entry.request.sequence, { outcome: 'rejected', why: 'never answered' });

  function judgeFrame(frame: LoggedFrame): void {
    if (frame.cut !== undefined) return die('a frame cut short');
    if (frame.kind === 'garbage') {
      if (frame.bytes.length === 0) return;
      if (frame.bytes.length < 4) return lose();
      const magic = frame.bytes.readUInt32BE(0);
      return magic === SIMPLE_MAGIC || magic === STRUCTURED_MAGIC ? lose() : die('garbage');
    }
    const otherMagic = frame.kind === 'simple' ? STRUCTURED_MAGIC : SIMPLE_MAGIC;
    const ownMagic = frame.kind === 'simple' ? SIMPLE_MAGIC : STRUCTURED_MAGIC;
    if (frame.magic === otherMagic) return lose();
    if (frame.magic !== ownMagic) return die('bad magic');
    const entry = frame.cookie.readUInt32BE(0) === 0 ? open.get(key(frame.cookie)) : undefined;
    if (!entry) return die('unknown cookie');
    const { request } = entry;
    if (frame.kind === 'simple') {
      if (entry.structured) return die('a simple reply after structured chunks');
      const expectsPayload = frame.errno === 0 && request.type === CMD.READ && request.length > 0;
      if (frame.payload.length !== (expectsPayload ? request.length : 0)) return lose();
      if (frame.errno !== 0) {
        entry.error = true;
        return complete(entry);
      }
      if (expectsPayload) {
        if (!cover(entry, request.offset, request.length)) return die('simple reply overlaps');
        entry.pieces.push({ offset: request.offset, data: frame.payload, length: request.length });
      }
      if (request.type === CMD.BLOCK_STATUS) {
        open.delete(key(request.cookie));
        verdicts.set(request.sequence, { outcome: 'rejected', why: 'block status without descriptors' });
        return;
      }
      return complete(entry);
    }
    entry.structured = true;
    const done = (frame.flags & DONE_FLAG) !== 0;
    const length = frame.declaredLength;
    const framed = length === frame.body.length;
    if (!structured) return die('structured reply never negotiated');
    if (length > MAX_REPLY_CHUNK) return die('chunk too long');
    const body = frame.body;
    switch (frame.type) {
      case REPLY_TYPE.NONE:
        if (length !== 0 || !done) return die('malformed NONE');
        return complete(entry);
      case REPLY_TYPE.OFFSET_DATA: {
        if (request.type !== CMD.READ) return die('data for a non-READ');
        if (length < 9 || length - 8 > request.length) return die('bad data length');
        if (body.length < 8) return lose();
        const offset = Number(body.readBigUInt64BE(0));
        const dataLength = length - 8;
        if (offset < request.offset || offset + dataLength > request.offset + request.length) return die('data outside the request');
        if (!cover(entry, offset, dataLength)) return die('data overlaps');
        if (!framed) return lose();
        entry.pieces.push({ offset, data: body.subarray(8), length: dataLength });
        if (done) complete(entry);
        return;
      }
      case REPLY_TYPE.OFFSET_HOLE: {
        if (request.type !== CMD.READ) return die('hole for a non-READ');
        if (length !== 12) return die('bad hole length');
        if (!framed) return lose();
        const offset = Number(body.readBigUInt64BE(0));
        const size = body.readUInt32BE(8);
        if (size === 0) return die('empty hole');
        if (offset < request.offset || offset + size > request.offset + request.length) return die('hole outside the request');
        if (!cover(entry, offset, size)) return die('hole overlaps');
        entry.pieces.push({ offset, data: undefined, length: size });
        if (done) complete(entry);
        return;
      }
      case REPLY_TYPE.BLOCK_STATUS: {
        if (request.type !== CMD.BLOCK_STATUS) return die('block status for another command');
        if (length < 12 || (length - 4) % 8 !== 0) return die('bad block status length');
        if (!framed) return lose();
        const contextId = body.readUInt32BE(0);
        if (!log.contexts.has(contextId)) return die('unknown context id');
        if (entry.answered.has(contextId)) return die('context answered twice');
        entry.answered.add(contextId);
        for (let at = 4; at < body.length; at += 8) if (body.readUInt32BE(at) === 0) return die('zero-length descriptor');
        entry.extents.set(contextId, decode(body.subarray(4), request.offset, request.offset + request.length));
        if (done) complete(entry);
        return;
      }
      case REPLY_TYPE.ERROR:
      case REPLY_TYPE.ERROR_OFFSET: {
        const withOffset = frame.type === REPLY_TYPE.ERROR_OFFSET;
        if (length < (withOffset ? 14 : 6)) return die('error chunk too short');
        if (length > MAX_ERROR_CHUNK) return die('error chunk too long');
        if (!framed) return lose();
        const errno = body.readUInt32BE(0);
        const messageLength = body.readUInt16BE(4);
        if (6 + messageLength + (withOffset ? 8 : 0) > body.length) return die('error message overruns');
        if (errno === 0) return die('errno 0');
        if (withOffset) {
          const offset = Number(body.readBigUInt64BE(6 + messageLength));
          if (offset < request.offset || offset >= request.offset + request.length) return die('error offset outside the request');
        }
        entry.error = true;
        if (done) complete(entry);
        return;
      }
      default:
        return die(`unknown reply type ${frame.type}`);
    }
  }
}
