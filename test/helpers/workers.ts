import { Worker } from 'node:worker_threads';

/**
 * Starts a worker thread on a TypeScript fixture. Worker entry points do not go
 * through tsx's loader hooks on Node 20, so the worker runs a small script that
 * loads the fixture through tsx's API.
 */
export function startTsWorker(fixture: URL, workerData: unknown): Worker {
  const tsxApi = import.meta.resolve('tsx/esm/api');
  const bootstrap = `import(${JSON.stringify(tsxApi)}).then((api) => api.tsImport(${JSON.stringify(fixture.href)}, ${JSON.stringify(import.meta.url)}))`;
  return new Worker(bootstrap, { eval: true, workerData });
}
