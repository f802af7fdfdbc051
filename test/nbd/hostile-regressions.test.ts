// One test per fault the hostile-server fuzzing (test/fuzz/nbd-hostile-server.test.ts)
// found in the client, each against the smallest server plan that shows it.
import test, { type ExecutionContext } from 'ava';
import { NbdClient, NbdError, NbdProtocolError, NbdTimeoutError } from '../../src/nbd/index.js';
import { goodHandshake, goodShape, REP, type Mutation, type OptionFrame, type ReplyPlan, type ServerPlan } from './hostile-plan.js';
import { patternAt, startHostileServer, type HostileServer } from './hostile-server.js';
import { tempDir } from './helpers.js';

const escaped: string[] = [];
process.on('uncaughtException', (error) => escaped.push(`uncaught: ${error.message}`));
process.on('unhandledRejection', (reason) => escaped.push(`unhandled: ${String(reason)}`));
test.after.always('nothing escaped as an uncaught exception or unhandled rejection', (t) => {
  t.deepEqual(escaped, []);
});

const SIZE = 1024 * 1024;

function plan(changes: Partial<ServerPlan> = {}): ServerPlan {
  return { handshake: goodHandshake(), export: { size: BigInt(SIZE), flags: 1 | 4 }, contextIds: [1, 2], replies: [], afterDisconnect: 'close', ...changes };
}

function answer(mutations: Mutation[], shape = goodShape()): ReplyPlan {
  return { kind: 'answer', shape, mutations, delayMs: 0, ending: { kind: 'normal' } };
}

async function serve(t: ExecutionContext, serverPlan: ServerPlan): Promise<HostileServer> {
  const server = await startHostileServer(await tempDir(t, 'nbd-hostile-'), serverPlan);
  t.teardown(() => server.close());
  return server;
}

test('content chunks that overlap are refused: two halves saying the same thing no longer pass for the whole read', async (t) => {
  // The first half is sent twice and the second never: the byte count adds up, the bytes do not.
  const overlapping = answer(
    [
      { kind: 'duplicate', index: 0 },
      { kind: 'drop', index: 2 },
      { kind: 'done-early', index: 1 },
    ],
    { ...goodShape(), cuts: [0.5] },
  );
  const server = await serve(t, plan({ replies: [overlapping] }));
  const client = await NbdClient.connect({ path: server.path });
  await t.throwsAsync(client.read(0, 8192), { instanceOf: NbdProtocolError, message: /overlaps content already sent/ });
  await client.close();
});

test('a read answered in shuffled pieces, holes among them, still reads right', async (t) => {
  const shuffled = (holes: boolean[]): ReplyPlan => answer([], { ...goodShape(), cuts: [0.1, 0.3, 0.5, 0.7, 0.9], holes, rotate: 3, reverse: true });
  const server = await serve(t, plan({ replies: [shuffled([false]), shuffled([true])] }));
  const client = await NbdClient.connect({ path: server.path });
  t.true((await client.read(4096, 10_000)).equals(patternAt(4096, 10_000)));
  t.true((await client.read(4096, 10_000)).equals(Buffer.alloc(10_000)));
  await client.close();
});

test.serial('a server that stalls after the handshake fails the waiting read with NbdTimeoutError after stallTimeout', async (t) => {
  const server = await serve(t, plan({ replies: [{ kind: 'stall' }] }));
  const client = await NbdClient.connect({ path: server.path, stallTimeout: 500 });
  const started = performance.now();
  await t.throwsAsync(client.read(0, 4096), { instanceOf: NbdTimeoutError, code: 'NBD_TIMEOUT' });
  t.true(performance.now() - started < 3000);
  await client.close();
});

test('a server that never finishes the handshake fails connect with NbdTimeoutError', async (t) => {
  const server = await serve(t, plan({ handshake: { ...goodHandshake(), go: { kind: 'stall' } } }));
  await t.throwsAsync(NbdClient.connect({ path: server.path, stallTimeout: 200 }), { instanceOf: NbdTimeoutError });
});

test('listExports and listMetaContexts are bounded by stallTimeout and their signal, not only while greeting', async (t) => {
  const server = await serve(t, plan({ handshake: { ...goodHandshake(), list: { kind: 'stall' }, listMetaContext: { kind: 'stall' } } }));
  await t.throwsAsync(NbdClient.listExports({ path: server.path, stallTimeout: 200 }), { instanceOf: NbdTimeoutError });
  await t.throwsAsync(NbdClient.listMetaContexts({ path: server.path, stallTimeout: 0, signal: AbortSignal.timeout(200) }), { name: 'TimeoutError' });
  t.true(await server.allClosed(2000), 'the sockets were closed');
});

test('close() does not wait for a request its caller aborted on a server that never answers', async (t) => {
  const server = await serve(t, plan({ replies: [{ kind: 'stall' }] }));
  const client = await NbdClient.connect({ path: server.path, stallTimeout: 0 });
  await t.throwsAsync(client.read(0, 4096, { signal: AbortSignal.timeout(50) }), { name: 'TimeoutError' });
  const started = performance.now();
  await client.close();
  t.true(performance.now() - started < 1000, 'close() returned without waiting for the abandoned read');
  t.true(await server.allClosed(2000));
});

test('NBD_OPT_ABORT written to a server that already hung up does not crash the process', async (t) => {
  const nameless = Buffer.alloc(4);
  const frames: OptionFrame[] = [
    { type: REP.SERVER, data: nameless },
    { type: REP.ACK, data: Buffer.alloc(0) },
  ];
  const server = await serve(t, plan({ handshake: { ...goodHandshake(), list: { kind: 'frames', frames, end: 'close' } } }));
  for (let i = 0; i < 20; i++) t.deepEqual(await NbdClient.listExports({ path: server.path }), [{ name: '', description: '' }]);
  await new Promise((resolve) => setTimeout(resolve, 100));
  t.deepEqual(escaped, []);
});

test('a server that keeps answering NBD_OPT_LIST_META_CONTEXT is cut off instead of filling memory', async (t) => {
  const context = Buffer.concat([Buffer.alloc(4), Buffer.from('x-flood:context')]);
  const frames: OptionFrame[] = Array.from({ length: 70_000 }, () => ({ type: REP.META_CONTEXT, data: context }));
  const server = await serve(t, plan({ handshake: { ...goodHandshake(), listMetaContext: { kind: 'frames', frames, end: 'ack' } } }));
  await t.throwsAsync(NbdClient.listMetaContexts({ path: server.path }), {
    instanceOf: NbdProtocolError,
    message: /does not stop answering NBD_OPT_LIST_META_CONTEXT/,
  });
});

test('absurd block sizes are refused at connect instead of turning into 4 GiB requests', async (t) => {
  for (const blockSize of [
    [2 ** 31, 2 ** 31, 2 ** 31],
    [3, 4096, 65536],
    [4096, 512, 65536],
    [65536, 65536, 4096],
  ] as const) {
    const server = await serve(t, plan({ export: { size: BigInt(SIZE), flags: 1, blockSize } }));
    await t.throwsAsync(
      NbdClient.connect({ path: server.path }),
      { instanceOf: NbdProtocolError, message: /block size/ },
      `block sizes ${blockSize.join(', ')}`,
    );
  }
  const server = await serve(t, plan({ export: { size: 64n * BigInt(SIZE), flags: 1, blockSize: [512, 4096, 0xffffffff] } }));
  const client = await NbdClient.connect({ path: server.path, requestSize: 64 * 1024 * 1024 });
  t.is(client.requestSize, 32 * 1024 * 1024, 'no stated maximum: the protocol bound of 32 MiB');
  await client.close();
});

const blockStatusFaults: Array<[string, Mutation, RegExp]> = [
  ['a descriptor of length zero', { kind: 'descriptors', index: 0, change: 'zero' }, /length zero/],
  ['a meta context id the handshake never gave out', { kind: 'context', index: 0, to: 'unknown' }, /never agreed on/],
  ['two answers for one meta context', { kind: 'context', index: 0, to: 'duplicate' }, /second block status reply/],
];
// The answer ends with NBD_REPLY_TYPE_NONE, so a repeated chunk still belongs to it.
const endsWithNone = { ...goodShape(), finalNone: true };

for (const [name, mutation, message] of blockStatusFaults) {
  test(`block status with ${name} is a protocol error`, async (t) => {
    const server = await serve(t, plan({ replies: [answer([mutation], endsWithNone)] }));
    const client = await NbdClient.connect({ path: server.path });
    await t.throwsAsync(
      (async () => {
        for await (const extent of client.extents('base:allocation')) void extent;
      })(),
      { instanceOf: NbdProtocolError, message },
    );
    await client.close();
  });
}

test('a reply that starts in structured chunks and ends in a simple reply is a protocol error', async (t) => {
  const switching = answer([{ kind: 'insert-simple', index: 1, errno: 0, payload: 'none' }], endsWithNone);
  const server = await serve(t, plan({ replies: [switching] }));
  const client = await NbdClient.connect({ path: server.path });
  await t.throwsAsync(
    (async () => {
      for await (const extent of client.extents('base:allocation')) void extent;
    })(),
    { instanceOf: NbdProtocolError, message: /simple reply to NBD_CMD_BLOCK_STATUS after structured reply chunks/ },
  );
  await client.close();
});

const readFaults: Array<[string, Mutation, RegExp]> = [
  ['a hole of zero bytes', { kind: 'zero-length', index: 0 }, /zero bytes|too short/],
  [
    'an error offset outside the request',
    { kind: 'insert-error', index: 0, errno: 5, message: 'bad sector', messageLengthDelta: 0, offset: 'outside', done: true },
    /outside the request/,
  ],
  ['an error chunk longer than any message', { kind: 'huge-length', index: 0, length: 0x7fffffff }, /exceeds the protocol bound|longer than any error message/],
];

for (const [name, mutation, message] of readFaults) {
  test(`a read answered with ${name} is a protocol error`, async (t) => {
    const shape = { ...goodShape(), holes: [true] };
    const server = await serve(
      t,
      plan({
        replies: [
          answer(
            mutation.kind === 'huge-length'
              ? [{ kind: 'insert-error', index: 0, errno: 5, message: 'x', messageLengthDelta: 0, offset: 'none', done: false }, mutation]
              : [mutation],
            shape,
          ),
        ],
      }),
    );
    const client = await NbdClient.connect({ path: server.path });
    await t.throwsAsync(client.read(0, 4096), { instanceOf: NbdProtocolError, message });
    await client.close();
  });
}

test('an error chunk inside the request still reports the server error and keeps the connection', async (t) => {
  const server = await serve(
    t,
    plan({ replies: [answer([{ kind: 'insert-error', index: 0, errno: 5, message: 'bad sector', messageLengthDelta: 0, offset: 'inside', done: false }])] }),
  );
  const client = await NbdClient.connect({ path: server.path });
  const error = await t.throwsAsync(client.read(0, 4096), { instanceOf: NbdError });
  t.is(error.code, 'EIO');
  t.is((await client.read(0, 16)).length, 16);
  await client.close();
});

test('a read sink that throws fails its own request, not the process or the connection', async (t) => {
  const server = await serve(t, plan());
  const client = await NbdClient.connect({ path: server.path });
  const sink = {
    data(): void {
      throw new Error('the sink is full');
    },
    hole(): void {},
  };
  await t.throwsAsync(client.readRequest(0, 4096, sink), { message: 'the sink is full' });
  t.is((await client.read(0, 4096)).length, 4096);
  await client.close();
  t.deepEqual(escaped, []);
});

test('one signal for a read split into many requests does not set off MaxListenersExceededWarning', async (t) => {
  const warnings: string[] = [];
  const onWarning = (warning: Error): void => {
    warnings.push(warning.name);
  };
  process.on('warning', onWarning);
  t.teardown(() => process.off('warning', onWarning));
  const server = await serve(t, plan());
  const client = await NbdClient.connect({ path: server.path, requestSize: 4096 });
  const signal = new AbortController().signal;
  t.is((await client.read(0, 64 * 4096, { signal })).length, 64 * 4096);
  let chunks = 0;
  for await (const chunk of client.chunks({ range: { offset: 0, length: 64 * 4096 }, signal })) chunks += chunk.length > 0 ? 1 : 0;
  t.true(chunks > 0);
  await client.close();
  await new Promise((resolve) => setImmediate(resolve));
  t.deepEqual(warnings, []);
});

test('chunks() refuses a range that is not made of whole numbers', async (t) => {
  const server = await serve(t, plan());
  const client = await NbdClient.connect({ path: server.path });
  for (const range of [
    { offset: Number.NaN, length: 1 },
    { offset: 0, length: 0.5 },
    { offset: 2 ** 60, length: 1 },
  ]) {
    await t.throwsAsync(
      (async () => {
        for await (const chunk of client.chunks({ range })) void chunk;
      })(),
      { instanceOf: RangeError },
    );
  }
  await client.close();
});
