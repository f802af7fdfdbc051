import type { Duplex } from 'node:stream';
import { NbdConnectionError, NbdOptionError, NbdProtocolError } from './errors.js';
import {
  HandshakeFlags,
  IHAVEOPT,
  Info,
  isOptionReplyError,
  MAX_MINIMUM_BLOCK_SIZE,
  MAX_OPTION_REPLIES,
  MAX_OPTION_REPLIES_BYTES,
  MAX_OPTION_REPLY,
  MAX_PAYLOAD,
  nameOf,
  NBDMAGIC,
  NO_MAXIMUM_BLOCK_SIZE,
  OLDSTYLE_MAGIC,
  Option,
  OPTION_REPLY_MAGIC,
  OptionReply,
} from './protocol.js';
import { upgradeToTls, type NbdTlsOptions, type TlsUpgradeContext } from './tls.js';
import { HandshakeReader } from './transport.js';

/** The block sizes the server asked for (`NBD_INFO_BLOCK_SIZE`). */
export interface BlockSizeLimits {
  minimum: number;
  preferred: number;
  maximum: number;
}

export interface ExportInfo {
  size: number;
  flags: number;
  blockSize: BlockSizeLimits;
  structuredReplies: boolean;
  /** Context id chosen by the server -> context name. */
  metaContexts: Map<number, string>;
}

/** One export the server lists. */
export interface ExportListing {
  name: string;
  description: string;
}

export interface NegotiateOptions {
  exportName: string;
  metaContexts: readonly string[];
  structuredReplies: boolean;
  tls: NbdTlsOptions | undefined;
  /** Name to check the server certificate against when `tls.servername` is absent. */
  tlsDefaultName: string;
  /** Receive memory and the bound of the negotiation, for a TLS relay. */
  tlsContext?: TlsUpgradeContext;
}

interface OptionReplyFrame {
  type: number;
  data: Buffer;
}

const optionName = (option: number): string => nameOf(Option, option, 'NBD_OPT_');
const replyName = (type: number): string => nameOf(OptionReply, type, 'NBD_REP_');

function encodeString(text: string): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  const out = Buffer.allocUnsafe(4 + bytes.length);
  out.writeUInt32BE(bytes.length, 0);
  bytes.copy(out, 4);
  return out;
}

function readU64(buf: Buffer, offset: number): number {
  const value = buf.readBigUInt64BE(offset);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new NbdProtocolError(`value ${value} is too large`);
  return Number(value);
}

/**
 * The option-haggling phase over one socket: greeting, STARTTLS, then whatever options
 * the caller needs. Ends either in transmission (GO / EXPORT_NAME) or with ABORT.
 */
export class OptionPhase {
  private reader: HandshakeReader;
  private noZeroes = false;
  /** Replies (and their bytes) received for the option sent last. */
  private replies = { count: 0, bytes: 0 };

  private constructor(public socket: Duplex) {
    this.reader = new HandshakeReader(socket);
  }

  static async open(socket: Duplex, tls: NbdTlsOptions | undefined, tlsDefaultName: string, tlsContext?: TlsUpgradeContext): Promise<OptionPhase> {
    const phase = new OptionPhase(socket);
    await phase.greet();
    if (tls) await phase.startTls(tls, tlsDefaultName, tlsContext);
    return phase;
  }

  private async greet(): Promise<void> {
    const hello = await this.reader.read(18);
    if (hello.readBigUInt64BE(0) !== NBDMAGIC) throw new NbdProtocolError('not an NBD server (bad greeting magic)');
    const style = hello.readBigUInt64BE(8);
    if (style === OLDSTYLE_MAGIC) throw new NbdProtocolError('oldstyle NBD servers are not supported');
    if (style !== IHAVEOPT) throw new NbdProtocolError('bad newstyle magic in the greeting');
    const serverFlags = hello.readUInt16BE(16);
    if (!(serverFlags & HandshakeFlags.FIXED_NEWSTYLE)) {
      throw new NbdProtocolError('the server does not speak fixed newstyle negotiation');
    }
    this.noZeroes = (serverFlags & HandshakeFlags.NO_ZEROES) !== 0;
    const clientFlags = Buffer.allocUnsafe(4);
    clientFlags.writeUInt32BE(HandshakeFlags.FIXED_NEWSTYLE | (this.noZeroes ? HandshakeFlags.NO_ZEROES : 0));
    this.socket.write(clientFlags);
  }

  private async startTls(tls: NbdTlsOptions, defaultName: string, context: TlsUpgradeContext | undefined): Promise<void> {
    this.send(Option.STARTTLS);
    const reply = await this.reply(Option.STARTTLS);
    if (reply.type !== OptionReply.ACK) throw this.refusal(Option.STARTTLS, reply);
    this.reader.detach();
    this.socket = await upgradeToTls(this.socket, tls, defaultName, context);
    this.reader = new HandshakeReader(this.socket);
  }

  send(option: number, data: Buffer = Buffer.alloc(0)): void {
    const header = Buffer.allocUnsafe(16);
    header.writeBigUInt64BE(IHAVEOPT, 0);
    header.writeUInt32BE(option, 8);
    header.writeUInt32BE(data.length, 12);
    this.replies = { count: 0, bytes: 0 };
    this.socket.write(data.length ? Buffer.concat([header, data]) : header);
  }

  async reply(option: number): Promise<OptionReplyFrame> {
    const header = await this.reader.read(20);
    if (header.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) throw new NbdProtocolError('bad option reply magic');
    const repliedTo = header.readUInt32BE(8);
    if (repliedTo !== option) {
      throw new NbdProtocolError(`reply to ${optionName(repliedTo)} received while waiting for ${optionName(option)}`);
    }
    const type = header.readUInt32BE(12);
    const length = header.readUInt32BE(16);
    if (length > MAX_OPTION_REPLY) throw new NbdProtocolError(`option reply of ${length} bytes is too large`);
    this.replies.count++;
    this.replies.bytes += header.length + length;
    if (this.replies.count > MAX_OPTION_REPLIES || this.replies.bytes > MAX_OPTION_REPLIES_BYTES) {
      throw new NbdProtocolError(`the server does not stop answering ${optionName(option)}`);
    }
    const data = length ? await this.reader.read(length) : Buffer.alloc(0);
    return { type, data };
  }

  refusal(option: number, reply: OptionReplyFrame): Error {
    if (!isOptionReplyError(reply.type)) {
      return new NbdProtocolError(`unexpected ${replyName(reply.type)} reply to ${optionName(option)}`);
    }
    return new NbdOptionError(optionName(option), replyName(reply.type), reply.data.toString('utf8'));
  }

  /** Returns false when the server does not know the option. */
  async structuredReplies(): Promise<boolean> {
    this.send(Option.STRUCTURED_REPLY);
    const reply = await this.reply(Option.STRUCTURED_REPLY);
    if (reply.type === OptionReply.ACK) return true;
    if (reply.type === OptionReply.ERR_UNSUP) return false;
    throw this.refusal(Option.STRUCTURED_REPLY, reply);
  }

  /** SET or LIST meta contexts; an unsupported option yields no contexts. */
  async metaContexts(option: number, exportName: string, queries: readonly string[]): Promise<Array<{ id: number; name: string }>> {
    const parts = [encodeString(exportName), Buffer.allocUnsafe(4)];
    parts[1]!.writeUInt32BE(queries.length);
    for (const query of queries) parts.push(encodeString(query));
    this.send(option, Buffer.concat(parts));
    // LIST answers with id 0 for every context, so ids cannot be keys here.
    const contexts: Array<{ id: number; name: string }> = [];
    for (;;) {
      const reply = await this.reply(option);
      if (reply.type === OptionReply.ACK) return contexts;
      if (reply.type === OptionReply.META_CONTEXT && reply.data.length >= 4) {
        const id = reply.data.readUInt32BE(0);
        // Ids key block status replies; LIST leaves them all 0, so only SET is checked.
        if (option === Option.SET_META_CONTEXT && contexts.some((context) => context.id === id)) {
          throw new NbdProtocolError(`the server gave meta context id ${id} to two contexts`);
        }
        contexts.push({ id, name: reply.data.toString('utf8', 4) });
        continue;
      }
      if (reply.type === OptionReply.ERR_UNSUP) return contexts;
      throw this.refusal(option, reply);
    }
  }

  /** NBD_OPT_GO; undefined when the server predates it. */
  async go(exportName: string): Promise<Omit<ExportInfo, 'structuredReplies' | 'metaContexts'> | undefined> {
    const name = encodeString(exportName);
    const requests = Buffer.allocUnsafe(4);
    requests.writeUInt16BE(1, 0);
    requests.writeUInt16BE(Info.BLOCK_SIZE, 2);
    this.send(Option.GO, Buffer.concat([name, requests]));
    let size: number | undefined;
    let flags = 0;
    let blockSize: BlockSizeLimits | undefined;
    for (;;) {
      const reply = await this.reply(Option.GO);
      if (reply.type === OptionReply.INFO && reply.data.length >= 2) {
        const info = reply.data.readUInt16BE(0);
        if (info === Info.EXPORT && reply.data.length >= 12) {
          size = readU64(reply.data, 2);
          flags = reply.data.readUInt16BE(10);
        } else if (info === Info.BLOCK_SIZE && reply.data.length >= 14) {
          blockSize = checkBlockSize(reply.data.readUInt32BE(2), reply.data.readUInt32BE(6), reply.data.readUInt32BE(10));
        }
        continue;
      }
      if (reply.type === OptionReply.ACK) {
        if (size === undefined) throw new NbdProtocolError('NBD_OPT_GO finished without NBD_INFO_EXPORT');
        return { size, flags, blockSize: normaliseBlockSize(blockSize, size) };
      }
      if (reply.type === OptionReply.ERR_UNSUP) return undefined;
      throw this.refusal(Option.GO, reply);
    }
  }

  /** The old way into transmission: no error reply, the server just hangs up on a bad name. */
  async exportName(exportName: string): Promise<Omit<ExportInfo, 'structuredReplies' | 'metaContexts'>> {
    this.send(Option.EXPORT_NAME, Buffer.from(exportName, 'utf8'));
    let answer: Buffer;
    try {
      answer = await this.reader.read(this.noZeroes ? 10 : 134);
    } catch (error) {
      if (error instanceof NbdConnectionError) {
        throw new NbdOptionError('NBD_OPT_EXPORT_NAME', 'NBD_REP_ERR_UNKNOWN', `no export named "${exportName}"`);
      }
      throw error;
    }
    const size = readU64(answer, 0);
    return { size, flags: answer.readUInt16BE(8), blockSize: normaliseBlockSize(undefined, size) };
  }

  async listExports(): Promise<ExportListing[]> {
    this.send(Option.LIST);
    const exports: ExportListing[] = [];
    for (;;) {
      const reply = await this.reply(Option.LIST);
      if (reply.type === OptionReply.ACK) return exports;
      if (reply.type === OptionReply.SERVER && reply.data.length >= 4) {
        const nameLength = reply.data.readUInt32BE(0);
        if (nameLength > reply.data.length - 4) throw new NbdProtocolError('export name overruns its NBD_REP_SERVER');
        exports.push({
          name: reply.data.toString('utf8', 4, 4 + nameLength),
          description: reply.data.toString('utf8', 4 + nameLength),
        });
        continue;
      }
      throw this.refusal(Option.LIST, reply);
    }
  }

  /** Leaves politely; the server's acknowledgement is not worth waiting for. */
  abort(): void {
    const socket = this.socket;
    if (socket.destroyed) return;
    this.send(Option.ABORT);
    this.reader.detach();
    // A write may still fail (the server hung up first): that changes nothing now.
    socket.on('error', () => {});
    // Once the option is out the socket is done; a server that never hangs up must
    // not keep it open.
    const giveUp = setTimeout(() => socket.destroy(), ABORT_FLUSH_TIMEOUT_MS);
    giveUp.unref();
    socket.end(() => {
      clearTimeout(giveUp);
      socket.destroy();
    });
  }

  /** Hands the socket and any early bytes to the transmission phase. */
  finish(): { socket: Duplex; leftover: Buffer[] } {
    const leftover = this.reader.detach();
    return { socket: this.socket, leftover };
  }
}

/** How long ABORT may take to leave before the socket is dropped anyway. */
const ABORT_FLUSH_TIMEOUT_MS = 5000;

const isPowerOfTwo = (value: number): boolean => value > 0 && (value & (value - 1)) === 0;

/**
 * NBD_INFO_BLOCK_SIZE as the INFO extension allows it: a power-of-two minimum of at
 * most 64 KiB, a power-of-two preferred size no smaller, and a maximum no smaller than
 * the minimum. Anything else would have us split requests by nonsense.
 */
function checkBlockSize(minimum: number, preferred: number, maximum: number): BlockSizeLimits {
  if (!isPowerOfTwo(minimum) || minimum > MAX_MINIMUM_BLOCK_SIZE) {
    throw new NbdProtocolError(`the server's minimum block size ${minimum} is not a power of two up to 64 KiB`);
  }
  if (!isPowerOfTwo(preferred) || preferred < minimum) {
    throw new NbdProtocolError(`the server's preferred block size ${preferred} is not a power of two at least its minimum ${minimum}`);
  }
  if (maximum < minimum) throw new NbdProtocolError(`the server's maximum block size ${maximum} is below its minimum ${minimum}`);
  return { minimum, preferred, maximum };
}

function normaliseBlockSize(limits: BlockSizeLimits | undefined, size: number): BlockSizeLimits {
  const minimum = limits?.minimum ?? 1;
  const preferred = Math.min(Math.max(limits?.preferred ?? 4096, minimum), MAX_PAYLOAD);
  const stated = limits === undefined || limits.maximum === NO_MAXIMUM_BLOCK_SIZE ? undefined : limits.maximum;
  // Without a stated maximum the spec promises 32 MiB (or the whole export if smaller).
  let maximum = Math.min(stated ?? MAX_PAYLOAD, MAX_PAYLOAD);
  if (stated === undefined && size > 0) maximum = Math.min(maximum, Math.max(size, minimum));
  return { minimum, preferred, maximum };
}

/** Full handshake into transmission for one connection. */
export async function negotiate(socket: Duplex, options: NegotiateOptions): Promise<{ socket: Duplex; leftover: Buffer[]; info: ExportInfo }> {
  const phase = await OptionPhase.open(socket, options.tls, options.tlsDefaultName, options.tlsContext);
  const structuredReplies = options.structuredReplies ? await phase.structuredReplies() : false;
  const metaContexts = new Map<number, string>();
  if (structuredReplies && options.metaContexts.length > 0) {
    for (const { id, name } of await phase.metaContexts(Option.SET_META_CONTEXT, options.exportName, options.metaContexts)) {
      metaContexts.set(id, name);
    }
  }
  const opened = (await phase.go(options.exportName)) ?? (await phase.exportName(options.exportName));
  return { ...phase.finish(), info: { ...opened, structuredReplies, metaContexts } };
}
