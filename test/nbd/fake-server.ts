import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { tempDir } from './helpers.js';

/**
 * A scripted NBD server for the cases a real server never produces: it negotiates
 * like a well-behaved one, then lets each test answer requests however it likes.
 */

const NBDMAGIC = Buffer.from('NBDMAGIC');
const IHAVEOPT = Buffer.from('IHAVEOPT');
const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;
export const REPLY = { NONE: 0, OFFSET_DATA: 1, OFFSET_HOLE: 2, BLOCK_STATUS: 5, ERROR: 32769, ERROR_OFFSET: 32770 };
export const DONE = 1;

export interface FakeRequest {
  flags: number;
  type: number;
  cookie: Buffer;
  offset: number;
  length: number;
  payload: Buffer | undefined;
}

export interface FakeServerOptions {
  size?: number;
  transmissionFlags?: number;
  /** Refuse NBD_OPT_GO like servers older than it. */
  noGo?: boolean;
  /** Accept connections and never say anything. */
  silent?: boolean;
  greeting?: Buffer;
  onRequest?: (request: FakeRequest, reply: ReplyWriter) => void;
  /** Told when NBD_CMD_DISC arrives. */
  onDisconnect?: () => void;
  /** Keep the socket open after NBD_CMD_DISC instead of hanging up. */
  stayAfterDisconnect?: boolean;
}

export class ReplyWriter {
  constructor(readonly socket: Socket) {}

  simple(cookie: Buffer, error = 0, payload?: Buffer): void {
    const header = Buffer.alloc(16);
    header.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
    header.writeUInt32BE(error, 4);
    cookie.copy(header, 8);
    this.socket.write(payload ? Buffer.concat([header, payload]) : header);
  }

  chunk(cookie: Buffer, flags: number, type: number, body: Buffer, declaredLength = body.length, magic = STRUCTURED_REPLY_MAGIC): void {
    const header = Buffer.alloc(20);
    header.writeUInt32BE(magic, 0);
    header.writeUInt16BE(flags, 4);
    header.writeUInt16BE(type, 6);
    cookie.copy(header, 8);
    header.writeUInt32BE(declaredLength, 16);
    this.socket.write(Buffer.concat([header, body]));
  }

  data(cookie: Buffer, flags: number, offset: number, data: Buffer): void {
    const body = Buffer.alloc(8 + data.length);
    body.writeBigUInt64BE(BigInt(offset), 0);
    data.copy(body, 8);
    this.chunk(cookie, flags, REPLY.OFFSET_DATA, body);
  }

  error(cookie: Buffer, flags: number, errno: number, message: string): void {
    const text = Buffer.from(message);
    const body = Buffer.alloc(6 + text.length);
    body.writeUInt32BE(errno, 0);
    body.writeUInt16BE(text.length, 4);
    text.copy(body, 6);
    this.chunk(cookie, flags, REPLY.ERROR, body);
  }

  blockStatus(cookie: Buffer, flags: number, contextId: number, extents: Array<[number, number]>): void {
    const body = Buffer.alloc(4 + 8 * extents.length);
    body.writeUInt32BE(contextId, 0);
    extents.forEach(([length, status], i) => {
      body.writeUInt32BE(length, 4 + 8 * i);
      body.writeUInt32BE(status, 8 + 8 * i);
    });
    this.chunk(cookie, flags, REPLY.BLOCK_STATUS, body);
  }
}

class Reader {
  private buffered = Buffer.alloc(0);
  private wake: (() => void) | undefined;
  private ended = false;

  constructor(socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, chunk]);
      this.wake?.();
    });
    const end = (): void => {
      this.ended = true;
      this.wake?.();
    };
    socket.on('close', end);
    socket.on('error', end);
  }

  async read(size: number): Promise<Buffer | undefined> {
    while (this.buffered.length < size) {
      if (this.ended) return undefined;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
    const out = this.buffered.subarray(0, size);
    this.buffered = this.buffered.subarray(size);
    return out;
  }
}

export const CONTEXT_ID = 7;
export const CONTEXT_NAME = 'base:allocation';

async function serve(socket: Socket, options: FakeServerOptions): Promise<void> {
  socket.on('error', () => {});
  if (options.silent) return;
  const reader = new Reader(socket);
  const size = options.size ?? 1024 * 1024;
  const flags = options.transmissionFlags ?? 1 | 4 | 64; // HAS_FLAGS | SEND_FLUSH | SEND_WRITE_ZEROES
  socket.write(options.greeting ?? Buffer.concat([NBDMAGIC, IHAVEOPT, Buffer.from([0, 3])]));
  if (!(await reader.read(4))) return;
  const optionReply = (option: number, type: number, data = Buffer.alloc(0)): void => {
    const header = Buffer.alloc(20);
    header.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
    header.writeUInt32BE(option, 8);
    header.writeUInt32BE(type, 12);
    header.writeUInt32BE(data.length, 16);
    socket.write(Buffer.concat([header, data]));
  };
  for (;;) {
    const header = await reader.read(16);
    if (!header) return;
    const option = header.readUInt32BE(8);
    const data = (await reader.read(header.readUInt32BE(12))) ?? Buffer.alloc(0);
    if (option === 1) {
      // NBD_OPT_EXPORT_NAME: straight into transmission, zeroes omitted (NO_ZEROES agreed).
      const answer = Buffer.alloc(10);
      answer.writeBigUInt64BE(BigInt(size), 0);
      answer.writeUInt16BE(flags, 8);
      socket.write(answer);
      break;
    }
    if (option === 8) optionReply(option, 1);
    else if (option === 10) {
      const context = Buffer.alloc(4 + CONTEXT_NAME.length);
      context.writeUInt32BE(CONTEXT_ID, 0);
      context.write(CONTEXT_NAME, 4);
      optionReply(option, 4, context);
      optionReply(option, 1);
    } else if (option === 7 && !options.noGo) {
      const info = Buffer.alloc(12);
      info.writeUInt16BE(0, 0);
      info.writeBigUInt64BE(BigInt(size), 2);
      info.writeUInt16BE(flags, 10);
      optionReply(option, 3, info);
      optionReply(option, 1);
      break;
    } else {
      optionReply(option, 0x80000001);
    }
    void data;
  }
  const writer = new ReplyWriter(socket);
  for (;;) {
    const header = await reader.read(28);
    if (!header) return;
    const request: FakeRequest = {
      flags: header.readUInt16BE(4),
      type: header.readUInt16BE(6),
      cookie: Buffer.from(header.subarray(8, 16)),
      offset: Number(header.readBigUInt64BE(16)),
      length: header.readUInt32BE(24),
      payload: undefined,
    };
    if (request.type === 1) request.payload = await reader.read(request.length);
    if (request.type === 2) {
      options.onDisconnect?.();
      if (!options.stayAfterDisconnect) socket.end();
      return;
    }
    options.onRequest?.(request, writer);
  }
}

export async function startFakeServer(t: ExecutionContext, options: FakeServerOptions): Promise<{ path: string; server: Server }> {
  const dir = await tempDir(t, 'nbd-fake-');
  const path = join(dir, 'fake.sock');
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    void serve(socket, options);
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  );
  return { path, server };
}
