import test from 'ava';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { buildSet, imagesEqual, tempDir } from '../backup/helpers.js';
import { jsonLines, runCli } from './helpers.js';

// The sets built by the helpers belong to a domain (uuid 4dea22b3-...) that the daemon does not know.

test('prune --keep on a set whose domain is gone: files pruned, checkpoints reported as not deleted', async (t) => {
  const builder = await buildSet(t, ['full', 'inc', 'inc', 'inc']);
  await builder.set.close();
  const run = await runCli(['prune', builder.dir, '--keep', '2']);
  t.is(run.code, 0, run.stderr);
  t.regex(
    run.stderr,
    /^domain 'vm1' \(uuid 4dea22b3-1d52-d8f3-2516-782e98ab3fa0\) no longer exists in qemu:\/\/\/system: its checkpoints cannot be deleted; pruning the files only\n$/,
  );
  t.regex(run.stdout, /removed backups 0001, 0002; kept 0003, 0004/);
  t.regex(run.stdout, /merged 0001, 0002 into 0003 \(now full\)/);
  t.regex(run.stdout, /checkpoints not deleted \(domain gone\): cp-0001, cp-0002\n/);
  t.deepEqual((await readdir(builder.dir)).filter((file) => file.endsWith('.qcow2')).sort(), ['vda.0003.full.qcow2', 'vda.0004.inc.qcow2']);

  const list = jsonLines((await runCli(['list', builder.dir, '--json'])).stdout.replace(/\n(?!$)/g, ''));
  t.deepEqual(
    (list[0] as { backups: Array<{ id: string }> }).backups.map((backup) => backup.id),
    ['0003', '0004'],
  );
  for (const id of ['0003', '0004']) {
    const out = join(await tempDir(t, 'cli-prune-'), 'vda.raw');
    const restore = await runCli(['restore', builder.dir, '--at', id, '--to', out, '--format', 'raw']);
    t.is(restore.code, 0, restore.stderr);
    t.true(await imagesEqual(out, builder.referenceAt('vda', id)), `restore at ${id} after prune`);
  }
  t.is((await runCli(['verify', builder.dir])).code, 0);
});

test('prune --json reports the result and the checkpoints left in libvirt', async (t) => {
  const builder = await buildSet(t, ['full', 'inc', 'diff']);
  await builder.set.close();
  const run = await runCli(['prune', builder.dir, '--keep', '1', '--json']);
  t.is(run.code, 0, run.stderr);
  const lines = jsonLines(run.stdout);
  t.like(lines[0], { type: 'notice' });
  t.true(lines.some((line) => line['type'] === 'step' && line['step'] === 'merge'));
  t.like(lines.at(-1), {
    type: 'result',
    command: 'prune',
    kept: ['0003'],
    removed: ['0001', '0002'],
    checkpoints: { deleted: [], alreadyGone: [], orphaned: ['cp-0001', 'cp-0002'] },
  });
});

test('prune that cannot reach libvirt fails before touching the set', async (t) => {
  const builder = await buildSet(t, ['full', 'inc', 'inc']);
  await builder.set.close();
  const before = await readdir(builder.dir);
  const manifest = await readFile(join(builder.dir, 'manifest.json'));
  const run = await runCli(['prune', builder.dir, '--keep', '1', '--connect', 'qemu+unix:///system?socket=/nonexistent/libvirt-sock']);
  t.is(run.code, 1);
  t.regex(run.stderr, /^libvirt-backup: cannot connect to qemu\+unix:\/\/\/system\?socket=\/nonexistent\/libvirt-sock: [^\n]*\n$/);
  t.deepEqual(await readdir(builder.dir), before);
  t.deepEqual(await readFile(join(builder.dir, 'manifest.json')), manifest);
});

test('prune of a set locked by another process fails without changing it', async (t) => {
  const builder = await buildSet(t, ['full', 'inc']);
  const manifest = await readFile(join(builder.dir, 'manifest.json'));
  const run = await runCli(['prune', builder.dir, '--keep', '1']);
  t.is(run.code, 1);
  t.regex(run.stderr, /^libvirt-backup: backup set [^\n]* is locked/);
  t.deepEqual(await readFile(join(builder.dir, 'manifest.json')), manifest);
});
