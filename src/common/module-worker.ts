import { Worker } from 'node:worker_threads';

/**
 * A worker thread running the ES module at `entry`. Compiled, the package runs its `.js`
 * files as they are. From the TypeScript sources (tests, benchmarks, the demo run them
 * through tsx) the entry is the `.ts` file beside the caller: Node 20 does not pass a
 * worker's entry through the loader hooks of `--import`, so the worker loads it through
 * tsx's API, which only a development checkout has.
 */
export function startModuleWorker(entry: URL, workerData: unknown): Worker {
  const options = { workerData, ...workerExecArgv(process.execArgv) };
  if (!entry.pathname.endsWith('.ts')) return new Worker(entry, options);
  const tsxApi = import.meta.resolve('tsx/esm/api');
  const bootstrap = `import(${JSON.stringify(tsxApi)}).then((api) => api.tsImport(${JSON.stringify(entry.href)}, ${JSON.stringify(entry.href)}))`;
  return new Worker(bootstrap, { ...options, eval: true });
}

/**
 * A worker inherits the process's Node options, and refuses to start under
 * `--input-type`, which a process started as `node --input-type=module -e ...` has. Given
 * a list instead, it refuses the options that only a process may have (`--expose-gc`...),
 * so such a worker gets none: ours need none.
 */
export function workerExecArgv(execArgv: readonly string[]): { execArgv?: string[] } {
  return execArgv.some((option) => option === '--input-type' || option.startsWith('--input-type=')) ? { execArgv: [] } : {};
}

/** The entry beside `callerUrl` (an `import.meta.url`), named without its extension: `.js` compiled, `.ts` from the sources. */
export function siblingModule(callerUrl: string, baseName: string): URL {
  const extension = callerUrl.endsWith('.ts') ? '.ts' : '.js';
  return new URL(`./${baseName}${extension}`, callerUrl);
}
