// A destination on a read-only file system, for real: tmpfs mounts made read-only
// (needs root, as the rest of the suite does for libvirtd). Every command must say
// "read-only file system" with the path and exit 2, whatever errno a lower layer saw.
import test, { type ExecutionContext } from 'ava';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { buildSet } from '../backup/helpers.js';
import { connectSystem, createThrowawayDomain } from '../helpers/daemon.js';
import { run } from '../helpers/process.js';
import { runCli, type CliRun } from './helpers.js';

async function tmpfsMount(t: ExecutionContext, options: 'ro' | 'rw'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'lvb-mnt-'));
  await run('mount', ['-t', 'tmpfs', '-o', `size=64m,${options}`, 'lvb-test', dir]);
  t.teardown(async () => {
    await run('umount', [dir]);
    await rm(dir, { recursive: true, force: true });
  });
  return dir;
}

function assertReadOnlyReport(t: ExecutionContext, result: CliRun, path: string, what: string): void {
  t.is(result.code, 2, `${what}: ${result.stderr}`);
  t.regex(result.stderr, /^libvirt-backup: [^\n]+\n$/, what);
  t.true(result.stderr.includes('read-only file system'), `${what}: ${result.stderr}`);
  t.true(result.stderr.includes(path), `${what} names ${path}: ${result.stderr}`);
  t.notRegex(result.stderr, /no such file|qemu-img/, what);
}

test('backup into an existing directory on a read-only file system', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const vm = await createThrowawayDomain(conn, 'cli-ro-existing');
  t.teardown(() => vm.cleanup());
  const readOnly = await tmpfsMount(t, 'ro');
  assertReadOnlyReport(t, await runCli(['backup', vm.name, '--dest', readOnly]), readOnly, 'backup');
});

// Node's recursive mkdir turns EROFS into ENOENT (nodejs/node#47098): that is where
// "no such file or directory" came from, until the set directory was made one level at a time.
test('backup into a new set directory on a read-only file system', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const vm = await createThrowawayDomain(conn, 'cli-ro-new');
  t.teardown(() => vm.cleanup());
  const readOnly = await tmpfsMount(t, 'ro');
  const dest = join(readOnly, 'set');
  assertReadOnlyReport(t, await runCli(['backup', vm.name, '--dest', dest]), dest, 'backup');
});

test('prune of a set on a file system remounted read-only', async (t) => {
  const builder = await buildSet(t, ['full', 'inc', 'inc']);
  await builder.set.close();
  const mount = await tmpfsMount(t, 'rw');
  await run('cp', ['-a', builder.dir, mount]);
  await run('mount', ['-o', 'remount,ro', mount]);
  const dir = join(mount, 'set');
  const before = await readdir(dir);
  assertReadOnlyReport(t, await runCli(['prune', dir, '--keep', '1']), dir, 'prune');
  t.deepEqual(await readdir(dir), before);
  t.is((await runCli(['verify', dir])).code, 0, 'verify only reads, so a read-only set verifies');
});

// Restore writes its output itself (no qemu-img in between), so EROFS reaches the message.
test('restore to a read-only directory', async (t) => {
  const builder = await buildSet(t, ['full']);
  const readOnly = await tmpfsMount(t, 'ro');
  assertReadOnlyReport(t, await runCli(['restore', builder.dir, '--to', readOnly]), readOnly, 'restore into the directory');
  const file = join(readOnly, 'vda.raw');
  assertReadOnlyReport(t, await runCli(['restore', builder.dir, '--to', file, '--format', 'raw']), readOnly, 'restore to a file');
});
