// The soak runs the compiled command (lib/cli/main.js, what the package's `bin`
// points to): a thousand cycles cannot afford tsx's second of start-up per call.
// lib/ must then be what src/ says, so it is rebuilt when any source is newer.
import { spawnSync } from 'node:child_process';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

async function mtimes(dir: string, suffix: string): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true }).catch(() => [])) {
    if (entry.isFile() && entry.name.endsWith(suffix)) found.push((await stat(join(entry.parentPath, entry.name))).mtimeMs);
  }
  return found;
}

/** Builds lib/ with tsc unless it is newer than every source; says what it did. */
export async function ensureCompiled(repoRoot: string, say: (line: string) => void): Promise<void> {
  const sources = await mtimes(join(repoRoot, 'src'), '.ts');
  const outputs = await mtimes(join(repoRoot, 'lib'), '.js');
  if (outputs.length > 0 && Math.max(...sources) < Math.min(...outputs)) return;
  say('lib/ is older than src/: building it (tsc -p tsconfig.build.json)');
  const result = spawnSync(process.execPath, [join(repoRoot, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], {
    cwd: repoRoot,
    encoding: 'utf8',
  });
  if (result.status !== 0) throw new Error(`building lib/ failed; the soak needs a build of the current sources:\n${result.stdout}${result.stderr}`);
}
