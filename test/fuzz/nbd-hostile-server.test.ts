// The NBD client against servers that lie, stall and hang up (test/nbd/hostile-server.ts),
// driven by fast-check. Every call must end within a bounded time, either with a typed
// error or with exactly what the server said (as a plain reading of its frames,
// test/fuzz/nbd-judge.ts, understands it); nothing may escape as an unhandled rejection
// or an exception, no socket may stay open, and memory stays bounded however large the
// lengths the server declares.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import fc from 'fast-check';
import {
  NbdClient,
  NbdConnectionError,
  NbdError,
  NbdOptionError,
  NbdProtocolError,
  NbdTimeoutError,
  type Extent,
  type ReadChunk,
} from '../../src/nbd/index.js';
import { CMD, REP, type OptionPlan, type ServerPlan } from '../nbd/hostile-plan.js';
import { startHostileServer, type HostileServer, type LoggedRequest } from '../nbd/hostile-server.js';
import { judgeConnection, type JudgedExtent, type Verdict } from './nbd-judge.js';
import { fuzzRuns, reportCases } from './fuzz-runs.js';
import { clientCommands, clientConfig, MiB, serverPlan, type ClientCommand, type ClientConfig, type Span } from './nbd-plans.js';

const RUNS = fuzzRuns(400);
/** Short, so a stalled server costs a case little; a healthy in-process server answers in microseconds. */
const STALL_MS = 150;
/** For a second run of a clean case that timed out: a loaded machine, or a client waiting for nothing? */
const PATIENT_STALL_MS = 3000;
/** No call may take longer than this, whatever the server does. */
const BOUND_MS = 5000;
/** External memory (Buffers) the whole run may reach: exports are at most a few MiB. */
const MEMORY_BOUND = 512 * MiB;

/** How far the cases got, so a run that never leaves the handshake shows. */
const reached = { connected: 0, refused: 0, calls: 0, resolved: 0, rejected: 0, judgedRequests: 0, hostileRequests: 0 };

const escaped: string[] = [];
process.on('unhandledRejection', (reason) => escaped.push(`unhandled rejection: ${describe(reason)}`));
process.on('uncaughtException', (error) => escaped.push(`uncaught exception: ${describe(error)}`));

function describe(value: unknown): string {
  return value instanceof Error ? `${value.name}: ${value.message}` : String(value);
}

type Settled<T> = { status: 'fulfilled'; value: T } | { status: 'rejected'; reason: unknown } | { status: 'hung' };

async function within<T>(promise: Promise<T>, ms = BOUND_MS): Promise<Settled<T>> {
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<{ status: 'hung' }>((resolve) => (timer = setTimeout(() => resolve({ status: 'hung' }), ms)));
  const settled = promise.then(
    (value) => ({ status: 'fulfilled' as const, value }),
    (reason: unknown) => ({ status: 'rejected' as const, reason }),
  );
  try {
    return await Promise.race([settled, hung]);
  } finally {
    clearTimeout(timer);
  }
}

const NBD_ERRORS = [NbdProtocolError, NbdConnectionError, NbdTimeoutError, NbdError, NbdOptionError];
const isNbdError = (error: unknown): boolean => NBD_ERRORS.some((type) => error instanceof type);
const isAbort = (error: unknown): boolean => error instanceof Error && (error.name === 'TimeoutError' || error.name === 'AbortError');

/** What the client must make of the handshake, read from the plan. */
function expectedConnect(plan: ServerPlan, config: ClientConfig): 'connects' | 'fails' | 'either' {
  const { handshake } = plan;
  if (handshake.greeting.kind !== 'good') return 'fails';
  // An ACK with a message is still an ACK: the client ignores the data.
  const step = (option: OptionPlan): 'good' | 'ack' | 'unsupported' | 'fails' | 'either' => {
    if (option.kind === 'good') return 'good';
    if (option.kind === 'frames') return 'either';
    if (option.kind === 'refuse') return option.type === REP.ERR_UNSUP ? 'unsupported' : option.type === REP.ACK ? 'ack' : 'fails';
    return 'fails';
  };
  let uncertain = false;
  if (config.structuredReplies) {
    const structured = step(handshake.structuredReply);
    if (structured === 'fails') return 'fails';
    if (structured === 'either') uncertain = true;
    if (structured === 'good' || structured === 'ack') {
      const contexts = step(handshake.setMetaContext);
      if (contexts === 'fails') return 'fails';
      if (contexts === 'either') uncertain = true;
    }
  }
  const go = step(handshake.go);
  if (go === 'fails' || go === 'ack') return 'fails';
  if (go === 'either') return 'either';
  if (go === 'unsupported' && handshake.exportName.kind !== 'good') return 'fails';
  if (plan.export.size > BigInt(Number.MAX_SAFE_INTEGER)) return 'fails';
  const blockSize = go === 'good' ? plan.export.blockSize : undefined;
  if (blockSize) {
    const [minimum, preferred, maximum] = blockSize;
    const power = (value: number): boolean => value > 0 && (value & (value - 1)) === 0;
    if (!power(minimum) || minimum > 65536 || !power(preferred) || preferred < minimum || maximum < minimum) return 'fails';
  }
  return uncertain ? 'either' : 'connects';
}

function judgeAll(server: HostileServer, structured: boolean): Map<number, Verdict> {
  const verdicts = new Map<number, Verdict>();
  for (const connection of server.connections) if (connection.transmitting) judgeConnection(connection, structured, verdicts);
  return verdicts;
}

/** Byte range of a span on an export of `size` bytes, at most `cap` long. */
function place(span: Span, size: number, cap: number): { offset: number; length: number } {
  if (span.outside) return { offset: size + 1 + Math.floor(span.at * 10), length: 1 };
  const offset = Math.min(size, Math.floor(span.at * size));
  return { offset, length: Math.floor(span.length * Math.min(size - offset, cap)) };
}

/** The last request in `window` with exactly this range and type: the one the call sent. */
function sentAs(window: LoggedRequest[], type: number, offset: number, length: number): LoggedRequest | undefined {
  for (let i = window.length - 1; i >= 0; i--) {
    const request = window[i]!;
    if (request.type === type && request.offset === offset && request.length === length) return request;
  }
  return undefined;
}

function merge(extents: JudgedExtent[]): JudgedExtent[] {
  const merged: JudgedExtent[] = [];
  for (const extent of extents) {
    const last = merged.at(-1);
    if (last && last.flags === extent.flags && last.offset + last.length === extent.offset) last.length += extent.length;
    else merged.push({ ...extent });
  }
  return merged;
}

class CaseRun {
  readonly problems: string[] = [];
  /** How the last call ended. */
  last: Settled<unknown> = { status: 'hung' };
  private verdicts = new Map<number, Verdict>();

  constructor(
    private readonly server: HostileServer,
    private readonly client: NbdClient,
    private readonly clean: boolean,
    private readonly stallTimeout: number,
  ) {}

  private judge(): void {
    this.verdicts = judgeAll(this.server, this.client.structuredReplies);
  }

  private contextId(request: LoggedRequest, name: string): number | undefined {
    for (const [id, context] of this.server.connections[request.connection]!.contexts) if (context === name) return id;
    return undefined;
  }

  /** A resolved call's request: the judge must agree it could resolve. */
  private resolvedVerdict(request: LoggedRequest | undefined, what: string): Verdict | undefined {
    if (!request) {
      this.problems.push(`${what}: resolved, but the server never saw the request`);
      return undefined;
    }
    const verdict = this.verdicts.get(request.sequence);
    if (verdict?.outcome === 'rejected') this.problems.push(`${what}: resolved, but the server's answer was not acceptable (${verdict.why})`);
    return verdict;
  }

  private expectFailure(what: string, reason: unknown, allowed: (error: unknown) => boolean): void {
    if (!isNbdError(reason) && !allowed(reason)) this.problems.push(`${what}: rejected with an untyped error: ${describe(reason)}`);
  }

  async run(command: ClientCommand): Promise<Settled<unknown>['status']> {
    const { client, server } = this;
    const size = client.size;
    const before = server.requests.length;
    const signal = 'signalMs' in command && command.signalMs !== undefined ? AbortSignal.timeout(command.signalMs) : undefined;
    const signalled = (error: unknown): boolean => signal !== undefined && isAbort(error);
    const outside = (span: Span | undefined) => (error: unknown) =>
      error instanceof RangeError && /lies outside the export/.test(error.message) && span?.outside === true;
    const what = `${command.kind}${'span' in command && command.span ? ` ${JSON.stringify(command.span)}` : ''}`;
    const settle = async <T>(promise: Promise<T>): Promise<Settled<T>> => {
      const settled = await within(promise);
      this.last = settled;
      if (settled.status === 'hung') this.problems.push(`${what}: did not end within ${BOUND_MS} ms`);
      return settled;
    };
    switch (command.kind) {
      case 'read': {
        const { offset, length } = place(command.span, size, Math.min(MiB, 64 * client.requestSize));
        const settled = await settle(client.read(offset, length, signal ? { signal } : {}));
        if (settled.status === 'rejected') this.expectFailure(what, settled.reason, (error) => signalled(error) || outside(command.span)(error));
        if (settled.status !== 'fulfilled') return settled.status;
        this.judge();
        const window = server.requests.slice(before);
        for (let at = offset; at < offset + length; at += client.requestSize) {
          const part = Math.min(client.requestSize, offset + length - at);
          const verdict = this.resolvedVerdict(sentAs(window, CMD.READ, at, part), `read ${at}+${part}`);
          if (verdict?.outcome === 'resolved' && !settled.value.subarray(at - offset, at - offset + part).equals(verdict.content!)) {
            this.problems.push(`read ${at}+${part}: resolved with bytes the server never sent there`);
          }
        }
        return 'fulfilled';
      }
      case 'write': {
        const { offset, length } = place(command.span, size, 64 * 1024);
        const settled = await settle(client.write(offset, Buffer.alloc(length, 0x77), signal ? { signal } : {}));
        if (settled.status === 'rejected') this.expectFailure(what, settled.reason, (error) => signalled(error) || outside(command.span)(error));
        if (settled.status !== 'fulfilled') return settled.status;
        this.judge();
        const window = server.requests.slice(before);
        for (let at = offset; at < offset + length; at += client.requestSize) {
          const part = Math.min(client.requestSize, offset + length - at);
          this.resolvedVerdict(sentAs(window, CMD.WRITE, at, part), `write ${at}+${part}`);
        }
        return 'fulfilled';
      }
      case 'flush': {
        const settled = await settle(client.flush());
        if (settled.status === 'rejected') this.expectFailure(what, settled.reason, () => false);
        if (settled.status === 'fulfilled') {
          this.judge();
          for (const request of server.requests.slice(before)) if (request.type === CMD.FLUSH) this.resolvedVerdict(request, 'flush');
        }
        return settled.status;
      }
      case 'extents': {
        const range = command.span ? place(command.span, size, 64 * MiB) : { offset: 0, length: Math.min(size, 64 * MiB) };
        const extents: Extent[] = [];
        const settled = await settle(
          (async () => {
            for await (const extent of client.extents(command.context, range, signal ? { signal } : {})) extents.push(extent);
          })(),
        );
        const unnegotiated = (error: unknown): boolean =>
          error instanceof Error && /was not negotiated/.test(error.message) && !client.hasMetaContext(command.context);
        if (settled.status === 'rejected')
          this.expectFailure(what, settled.reason, (error) => signalled(error) || outside(command.span)(error) || unnegotiated(error));
        if (settled.status !== 'fulfilled') return settled.status;
        this.checkExtents(what, command.context, range, extents, server.requests.slice(before));
        return 'fulfilled';
      }
      case 'chunks': {
        // Bounded work per case: at most 64 requests' worth of data.
        const cap = Math.min(MiB, 64 * client.requestSize);
        const range = command.span ? place(command.span, size, cap) : { offset: 0, length: Math.min(size, cap) };
        const chunks: Array<{ kind: 'data'; offset: number; data: Buffer } | { kind: 'hole'; offset: number; length: number }> = [];
        const settled = await settle(
          (async () => {
            const options = { range, ...(signal ? { signal } : {}), reuseMemory: command.reuseMemory };
            for await (const chunk of client.chunks(options) as AsyncIterable<ReadChunk>) {
              // Memory reused by later reads: keep a copy.
              chunks.push(chunk.kind === 'data' ? { kind: 'data', offset: chunk.offset, data: Buffer.from(chunk.data) } : chunk);
            }
          })(),
        );
        if (settled.status === 'rejected') this.expectFailure(what, settled.reason, (error) => signalled(error) || outside(command.span)(error));
        if (settled.status !== 'fulfilled') return settled.status;
        this.checkChunks(what, range, chunks, server.requests.slice(before));
        return 'fulfilled';
      }
      case 'list-exports': {
        const settled = await settle(NbdClient.listExports({ path: server.path, stallTimeout: this.stallTimeout }));
        if (settled.status === 'rejected') this.expectFailure(what, settled.reason, () => false);
        return settled.status;
      }
      case 'list-meta-contexts': {
        const settled = await settle(NbdClient.listMetaContexts({ path: server.path, stallTimeout: this.stallTimeout }));
        if (settled.status === 'rejected') this.expectFailure(what, settled.reason, () => false);
        return settled.status;
      }
      case 'close': {
        const settled = await settle(client.close());
        if (settled.status === 'rejected') this.problems.push(`close: rejected: ${describe(settled.reason)}`);
        return settled.status;
      }
    }
  }

  private checkExtents(what: string, context: string, range: { offset: number; length: number }, extents: Extent[], window: LoggedRequest[]): void {
    const end = range.offset + range.length;
    let at = range.offset;
    for (const extent of extents) {
      if (extent.offset !== at || extent.length <= 0) {
        this.problems.push(`${what}: extents do not tile the range at ${at}: ${JSON.stringify(extent)}`);
        return;
      }
      at += extent.length;
    }
    if (at !== end) {
      this.problems.push(`${what}: extents end at ${at}, not ${end}`);
      return;
    }
    this.judge();
    const expected: JudgedExtent[] = [];
    let position = range.offset;
    while (position < end) {
      const length = Math.min(end - position, 2 ** 31);
      const request = sentAs(window, CMD.BLOCK_STATUS, position, length);
      const verdict = this.resolvedVerdict(request, `block status at ${position}`);
      if (!request || verdict?.outcome !== 'resolved') return;
      const id = this.contextId(request, context);
      const answer = id === undefined ? undefined : verdict.extents.get(id);
      if (!answer || answer.length === 0) {
        this.problems.push(`${what}: resolved, but the answer at ${position} had nothing for ${context}`);
        return;
      }
      expected.push(...answer);
      position = answer.at(-1)!.offset + answer.at(-1)!.length;
    }
    const wanted = merge(expected);
    if (JSON.stringify(wanted) !== JSON.stringify(extents)) {
      this.problems.push(`${what}: extents ${JSON.stringify(extents).slice(0, 300)} differ from the server's ${JSON.stringify(wanted).slice(0, 300)}`);
    }
  }

  private checkChunks(
    what: string,
    range: { offset: number; length: number },
    chunks: Array<{ kind: 'data'; offset: number; data: Buffer } | { kind: 'hole'; offset: number; length: number }>,
    window: LoggedRequest[],
  ): void {
    let at = range.offset;
    for (const chunk of chunks) {
      const length = chunk.kind === 'data' ? chunk.data.length : chunk.length;
      if (chunk.offset !== at || length <= 0) {
        this.problems.push(`${what}: chunks do not tile the range at ${at}`);
        return;
      }
      at += length;
    }
    if (at !== range.offset + range.length) {
      this.problems.push(`${what}: chunks end at ${at}, not ${range.offset + range.length}`);
      return;
    }
    this.judge();
    const reads = window.filter((request) => request.type === CMD.READ);
    const statuses = window.filter((request) => request.type === CMD.BLOCK_STATUS);
    for (const chunk of chunks) {
      const length = chunk.kind === 'data' ? chunk.data.length : chunk.length;
      const read = [...reads].reverse().find((request) => request.offset <= chunk.offset && chunk.offset + length <= request.offset + request.length);
      if (read) {
        const verdict = this.resolvedVerdict(read, `${what}: read at ${read.offset}`);
        if (verdict?.outcome !== 'resolved') continue;
        const sent = verdict.content!.subarray(chunk.offset - read.offset, chunk.offset - read.offset + length);
        const got = chunk.kind === 'data' ? chunk.data : Buffer.alloc(length);
        if (!sent.equals(got)) this.problems.push(`${what}: ${chunk.kind} at ${chunk.offset}+${length} differs from what the server sent`);
        continue;
      }
      if (chunk.kind === 'data') {
        this.problems.push(`${what}: data at ${chunk.offset}+${length} that no read asked for`);
        continue;
      }
      // A hole never read: the server's block status must have said it reads as zeroes.
      if (!this.saidZeroes(statuses, chunk.offset, length)) this.problems.push(`${what}: hole at ${chunk.offset}+${length} where the server never said zeroes`);
    }
  }

  /** Whether resolved block status answers in `statuses` call all of [offset, offset + length) zeroes. */
  private saidZeroes(statuses: LoggedRequest[], offset: number, length: number): boolean {
    const zeroes: JudgedExtent[] = [];
    for (const request of statuses) {
      const verdict = this.verdicts.get(request.sequence);
      // After a framing lie nobody can say what the client read: nothing to hold it to.
      if (verdict?.outcome === 'unknown') return true;
      const id = this.contextId(request, 'base:allocation');
      if (verdict?.outcome !== 'resolved' || id === undefined) continue;
      for (const extent of verdict.extents.get(id) ?? []) if (extent.flags & 2) zeroes.push(extent);
    }
    zeroes.sort((a, b) => a.offset - b.offset);
    let at = offset;
    for (const extent of zeroes) {
      if (extent.offset > at) break;
      at = Math.max(at, extent.offset + extent.length);
      if (at >= offset + length) return true;
    }
    return at >= offset + length;
  }

  /** With a clean server every call must succeed (unless its own signal or range says otherwise). */
  checkLiveness(command: ClientCommand, outcome: Settled<unknown>, closed: boolean): void {
    if (!this.clean || outcome.status === 'fulfilled' || closed) return;
    if ('signalMs' in command && command.signalMs !== undefined) return;
    if ('span' in command && command.span?.outside) return;
    if (command.kind === 'extents' && !this.client.hasMetaContext(command.context)) return;
    if (command.kind === 'write' && this.client.readOnly) return;
    const why = outcome.status === 'rejected' ? describe(outcome.reason) : 'no answer';
    this.problems.push(`${command.kind}: failed against a well-behaved server: ${why}`);
  }
}

async function runCase(
  dir: string,
  name: string,
  clean: boolean,
  plan: ServerPlan,
  config: ClientConfig,
  commands: ClientCommand[],
  stallTimeout = STALL_MS,
): Promise<string[]> {
  const server = await startHostileServer(dir, plan, `${name}.sock`);
  const problems: string[] = [];
  try {
    const expected = expectedConnect(plan, config);
    const connecting = await within(
      NbdClient.connect({
        path: server.path,
        connections: config.connections,
        requestsPerConnection: config.requestsPerConnection,
        maxBytesInFlight: config.maxBytesInFlight,
        requestSize: config.requestSize,
        metaContexts: config.metaContexts,
        structuredReplies: config.structuredReplies,
        stallTimeout,
      }),
    );
    if (connecting.status === 'hung') problems.push(`connect: did not end within ${BOUND_MS} ms`);
    if (connecting.status === 'rejected') {
      reached.refused++;
      if (!isNbdError(connecting.reason)) problems.push(`connect: rejected with an untyped error: ${describe(connecting.reason)}`);
      if (expected === 'connects') problems.push(`connect: failed against a server that did everything right: ${describe(connecting.reason)}`);
    }
    if (connecting.status === 'fulfilled') {
      const client = connecting.value;
      reached.connected++;
      if (expected === 'fails') problems.push('connect: succeeded although the handshake was broken');
      if (expected === 'connects' && client.size !== Number(plan.export.size))
        problems.push(`connect: size ${client.size}, the server said ${plan.export.size}`);
      const run = new CaseRun(server, client, clean, stallTimeout);
      let closed = false;
      for (const command of commands) {
        const outcome = await run.run(command);
        reached.calls++;
        if (outcome === 'fulfilled') reached.resolved++;
        if (outcome === 'rejected') reached.rejected++;
        if (outcome === 'hung') break;
        run.checkLiveness(command, run.last, closed && command.kind !== 'list-exports' && command.kind !== 'list-meta-contexts');
        if (command.kind === 'close') closed = true;
      }
      problems.push(...run.problems);
      const closing = await within(client.close());
      if (closing.status !== 'fulfilled') problems.push(`close: ${closing.status === 'hung' ? 'hung' : describe((closing as { reason: unknown }).reason)}`);
    }
    if (!(await server.allClosed(2000))) problems.push('a client socket was left open');
    reached.judgedRequests += server.requests.length;
    reached.hostileRequests += server.requests.filter((request) => {
      const reply = plan.replies[request.sequence];
      return reply !== undefined && (reply.kind !== 'answer' || reply.mutations.length > 0 || reply.ending.kind !== 'normal');
    }).length;
  } finally {
    await server.close();
  }
  return problems;
}

test('the NBD client against hostile servers: typed errors or correct results, bounded time and memory, no leaks', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'lvb-nbd-fuzz-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const handlesBefore = process.getActiveResourcesInfo().filter((name) => name === 'PipeWrap').length;
  let peakMemory = 0;
  let cases = 0;
  const startedAt = performance.now();
  const property = fc.asyncProperty(serverPlan, clientConfig, clientCommands, async ({ clean, plan }, config, commands) => {
    const number = cases++;
    let problems = await runCase(dir, `case-${number}`, clean, plan, config, commands);
    // A stall clock that ran out against a server that should have made it: a loaded
    // machine, or a client waiting for nothing? Only a second, patient run can tell.
    const onlyTimeouts = problems.length > 0 && problems.every((problem) => /(well-behaved server|did everything right): NbdTimeoutError/.test(problem));
    if (onlyTimeouts) problems = await runCase(dir, `case-${number}-again`, clean, plan, config, commands, PATIENT_STALL_MS);
    problems.push(...escaped.splice(0));
    peakMemory = Math.max(peakMemory, process.memoryUsage().arrayBuffers);
    if (problems.length > 0) throw new Error(problems.join('\n'));
  });
  const result = await fc.check(property, { numRuns: RUNS });
  reportCases(t.log.bind(t), 'nbd hostile-server', result.numRuns, result.failed ? 1 : 0, startedAt);
  t.log(
    `connected ${reached.connected}, refused ${reached.refused}; calls ${reached.calls}: ${reached.resolved} resolved, ${reached.rejected} rejected; requests ${reached.judgedRequests}, ${reached.hostileRequests} answered with a fault`,
  );
  if (result.failed) t.log(describe(result.errorInstance));
  t.false(result.failed, fc.defaultReportMessage(result) ?? '');
  t.true(peakMemory < MEMORY_BOUND, `external memory peaked at ${peakMemory} bytes`);
  // Every socket of every case is gone (the servers are closed by now).
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.is(process.getActiveResourcesInfo().filter((name) => name === 'PipeWrap').length, handlesBefore);
  t.deepEqual(escaped, []);
});
