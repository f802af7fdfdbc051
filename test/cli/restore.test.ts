import test from 'ava';
import { readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { MiB, SetBuilder, TWO_DISKS, buildSet, imagesEqual, qemuImg, tempDir } from '../backup/helpers.js';
import { jsonLines, runCli, startCli } from './helpers.js';

test('restore at each point equals the reference, in qcow2 and raw', async (t) => {
  const builder = await buildSet(t, ['full', 'inc', 'diff', 'inc'], TWO_DISKS);
  for (const backup of builder.set.backups) {
    for (const format of ['qcow2', 'raw'] as const) {
      const out = await tempDir(t, 'cli-restore-');
      const run = await runCli(['restore', builder.dir, '--to', out, '--at', backup.id, '--format', format]);
      t.is(run.code, 0, run.stderr);
      t.regex(run.stdout, new RegExp(`^restored backup ${backup.id} of vm1 as ${format}:`));
      t.deepEqual((await readdir(out)).sort(), [`vda.${format}`, `vdb.${format}`]);
      for (const target of ['vda', 'vdb']) {
        const path = join(out, `${target}.${format}`);
        t.true(await imagesEqual(path, builder.referenceAt(target, backup.id)), `${target} at ${backup.id} (${format})`);
        t.regex(await qemuImg('info', '--output=json', path), new RegExp(`"format": "${format}"`));
      }
    }
  }
});

test('restore of one disk to a file, the newest by default, with --json events', async (t) => {
  const builder = await buildSet(t, ['full', 'inc'], TWO_DISKS);
  const out = join(await tempDir(t, 'cli-restore-'), 'vdb.img');
  const run = await runCli(['restore', builder.dir, '--to', out, '--disk', 'vdb', '--format', 'raw', '--json']);
  t.is(run.code, 0, run.stderr);
  t.true(await imagesEqual(out, builder.referenceAt('vdb', '0002')));
  const lines = jsonLines(run.stdout);
  t.like(lines[0], { type: 'restore-start', backupId: '0002', disks: [{ target: 'vdb', virtualSize: 2 * MiB, chain: ['vdb.0002.full.qcow2'] }] });
  t.like(lines.at(-1), { type: 'result', command: 'restore', backupId: '0002', disks: [{ target: 'vdb', path: out, format: 'raw' }] });
  t.true(lines.slice(1, -1).every((line) => line['type'] === 'progress' && line['target'] === 'vdb'));

  const again = await runCli(['restore', builder.dir, '--to', out, '--disk', 'vdb', '--format', 'raw', '--json']);
  t.is(again.code, 2);
  t.like(jsonLines(again.stdout).at(-1), { type: 'error', code: 'OUTPUT_EXISTS', exitCode: 2 });
  t.regex(again.stderr, /already exists/);
  const overwritten = await runCli(['restore', builder.dir, '--to', out, '--disk', 'vdb', '--format', 'raw', '--at', '0001', '--overwrite']);
  t.is(overwritten.code, 0, overwritten.stderr);
  t.true(await imagesEqual(out, builder.referenceAt('vdb', '0001')));
});

test('restore with a missing backing file: exit 2, clear message, nothing written', async (t) => {
  const builder = await buildSet(t, ['full', 'inc', 'inc']);
  await rm(join(builder.dir, 'vda.0002.inc.qcow2'));
  const manifestBefore = await readFile(join(builder.dir, 'manifest.json'));
  const out = await tempDir(t, 'cli-restore-');
  const run = await runCli(['restore', builder.dir, '--to', out]);
  t.is(run.code, 2);
  t.is(run.stderr, 'libvirt-backup: vda.0003.inc.qcow2: backing file vda.0002.inc.qcow2 is missing\n');
  t.is(run.stdout, '');
  t.deepEqual(await readdir(out), []);
  t.deepEqual(await readFile(join(builder.dir, 'manifest.json')), manifestBefore);
});

test('SIGINT during a long restore exits 130 and leaves no partial output', async (t) => {
  const size = 256 * MiB;
  const builder = await SetBuilder.create(t, [
    { target: 'vda', sourceFormat: 'qcow2', size },
    { target: 'vdb', sourceFormat: 'qcow2', size },
  ]);
  for (const target of ['vda', 'vdb']) {
    for (let chunk = 0; chunk < 4; chunk += 1) await builder.guestWrite(target, { pattern: 0x31 + chunk, offset: chunk * 64 * MiB, length: 64 * MiB });
  }
  await builder.backup('full');
  const out = await tempDir(t, 'cli-restore-');
  const cli = startCli(['restore', builder.dir, '--to', out, '--format', 'raw', '--json']);
  await cli.waitForLine((line) => line.includes('"type":"progress"'));
  cli.child.kill('SIGINT');
  const run = await cli.done;
  t.is(run.code, 130, run.stderr);
  const lines = jsonLines(run.stdout);
  t.like(lines.at(-1), { type: 'error', code: 'INTERRUPTED', exitCode: 130 });
  t.true(lines.some((line) => line['type'] === 'notice' && /SIGINT received/.test(String(line['message']))));
  t.regex(run.stderr, /^libvirt-backup: interrupted by SIGINT/m);
  t.deepEqual(await readdir(out), [], 'no output and no partial file');
});
