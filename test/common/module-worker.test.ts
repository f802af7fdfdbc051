// Worker threads on the package's own modules: from the TypeScript sources (through tsx),
// and in a process started as `node --input-type=module -e`, whose options a worker
// would otherwise inherit and refuse.
import { execFileSync } from 'node:child_process';

import test from 'ava';

import { siblingModule, startModuleWorker, workerExecArgv } from '../../src/common/module-worker.js';

const echo = new URL('../fixtures/module-worker-echo.ts', import.meta.url);

test('a TypeScript entry runs in the worker and gets its workerData', async (t) => {
  const worker = startModuleWorker(echo, { n: 7 });
  const answer = await new Promise((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  t.deepEqual(answer, { echoed: { n: 7 }, typescript: true });
  await worker.terminate();
});

test('a process started with --input-type and a per-process option still starts the worker', (t) => {
  const script = `
    const { startModuleWorker } = await import(${JSON.stringify(new URL('../../src/common/module-worker.ts', import.meta.url).href)});
    const worker = startModuleWorker(new URL(${JSON.stringify(echo.href)}), 'hello');
    worker.once('message', (answer) => { console.log(JSON.stringify(answer)); worker.terminate(); });
    worker.once('error', (error) => { console.log('error: ' + error.message); process.exitCode = 1; });
  `;
  const out = execFileSync(process.execPath, ['--import=tsx', '--expose-gc', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
  t.deepEqual(JSON.parse(out.trim()), { echoed: 'hello', typescript: true });
});

test('options are inherited unless --input-type is among them', (t) => {
  t.deepEqual(workerExecArgv(['--expose-gc', '--enable-source-maps']), {});
  t.deepEqual(workerExecArgv(['--expose-gc', '--input-type=module', '-e', 'x']), { execArgv: [] });
  t.deepEqual(workerExecArgv(['--input-type', 'module']), { execArgv: [] });
});

test('the sibling of a compiled module is compiled, of a source module a source', (t) => {
  t.is(siblingModule('file:///p/lib/backup/engine/pull-copy-thread.js', 'pull-copy-worker').href, 'file:///p/lib/backup/engine/pull-copy-worker.js');
  t.is(siblingModule('file:///p/src/backup/engine/pull-copy-thread.ts', 'pull-copy-worker').href, 'file:///p/src/backup/engine/pull-copy-worker.ts');
});
