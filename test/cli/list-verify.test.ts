import test from 'ava';
import { open, readFile, readdir, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MiB, ONE_DISK, SetBuilder, TWO_DISKS, buildSet } from '../backup/helpers.js';
import { jsonLines, runCli } from './helpers.js';

test('list prints the chain as a table, and as JSON with --json', async (t) => {
  const builder = await buildSet(t, ['full', 'inc', 'diff'], TWO_DISKS);
  const table = await runCli(['list', builder.dir]);
  t.is(table.code, 0, table.stderr);
  t.is(table.stderr, '');
  const lines = table.stdout.trimEnd().split('\n');
  t.is(lines[0], `vm1 (4dea22b3-1d52-d8f3-2516-782e98ab3fa0) in ${builder.dir}`);
  t.regex(lines[1]!, /^ID\s+LEVEL\s+QUIESCED\s+PARENT\s+COMPLETED\s+CHECKPOINT\s+DISKS\s+COMPRESSED\s+DATA\s+STORED\s+SIZE$/);
  t.regex(lines[2]!, /^0001\s+full\s+-\s+-\s+\S+\s+cp-0001\s+vda,vdb\s/);
  t.regex(lines[3]!, /^0002\s+inc\s+-\s+0001\s+\S+\s+cp-0002\s+vda,vdb\(full\)\s/);
  t.regex(lines[4]!, /^0003\s+diff\s+-\s+0001\s+/);
  t.is(lines.length, 5);

  const json = await runCli(['list', builder.dir, '--json']);
  t.is(json.code, 0);
  const document = JSON.parse(json.stdout) as {
    domain: { name: string };
    backups: Array<{ id: string; level: string; parent: string | null; disks: unknown[] }>;
  };
  t.is(document.domain.name, 'vm1');
  t.deepEqual(
    document.backups.map(({ id, level, parent }) => ({ id, level, parent })),
    [
      { id: '0001', level: 'full', parent: null },
      { id: '0002', level: 'inc', parent: '0001' },
      { id: '0003', level: 'diff', parent: '0001' },
    ],
  );
  t.is(document.backups[0]!.disks.length, 2);
});

test('verify of a sound set exits 0; a damaged file exits 3 and is named', async (t) => {
  const builder = await buildSet(t, ['full', 'inc', 'inc']);
  const ok = await runCli(['verify', builder.dir]);
  t.is(ok.code, 0, ok.stderr);
  t.regex(ok.stdout, /3 files of 3 backups verified, no errors/);

  // Flip bytes in the middle of the second file: same size, different content.
  const damaged = join(builder.dir, 'vda.0002.inc.qcow2');
  const handle = await open(damaged, 'r+');
  const { size } = await handle.stat();
  await handle.write(Buffer.alloc(512, 0xee), 0, 512, Math.floor(size / 2));
  await handle.close();

  const bad = await runCli(['verify', builder.dir]);
  t.is(bad.code, 3);
  t.regex(bad.stdout, /^error +vda\.0002\.inc\.qcow2: checksum is xxh128:[0-9a-f]{32}, the manifest says xxh128:[0-9a-f]{32}$/m);
  t.regex(bad.stdout, /3 files of 3 backups checked, \d+ errors?/);
  t.notRegex(bad.stdout, /vda\.0001\.full\.qcow2:/);

  const json = await runCli(['verify', builder.dir, '--json']);
  t.is(json.code, 3);
  const lines = jsonLines(json.stdout);
  const result = lines.at(-1) as { type: string; ok: boolean; problems: Array<{ file: string; kind: string }> };
  t.is(result.type, 'result');
  t.false(result.ok);
  t.true(result.problems.some((problem) => problem.file === 'vda.0002.inc.qcow2' && problem.kind === 'checksum-mismatch'));
  t.true(lines.some((line) => line['type'] === 'progress' && line['target'] === 'vda.0001.full.qcow2'));
});

test('a corrupt manifest: exit 2 with a clear message, and the set is left as it was', async (t) => {
  const builder = await buildSet(t, ['full', 'inc']);
  await builder.set.close();
  const manifest = join(builder.dir, 'manifest.json');
  const text = await readFile(manifest, 'utf8');
  await writeFile(manifest, text.slice(0, Math.floor(text.length / 2)));
  const before = await readdir(builder.dir);
  const truncated = await readFile(manifest);
  const out = join(builder.root, 'out.qcow2');
  for (const args of [
    ['list', builder.dir],
    ['verify', builder.dir],
    ['restore', builder.dir, '--to', out],
    ['prune', builder.dir, '--keep', '1'],
  ]) {
    const run = await runCli(args);
    t.is(run.code, 2, args.join(' '));
    t.regex(run.stderr, /^libvirt-backup: [^\n]*manifest\.json[^\n]*\n$/, args.join(' '));
    t.notRegex(run.stderr, /\n\s+at /, 'no stack trace');
  }
  t.deepEqual(await readdir(builder.dir), before);
  t.deepEqual(await readFile(manifest), truncated);
  t.deepEqual(await readdir(builder.root), ['refs', 'set']);

  const debug = await runCli(['list', builder.dir], { LIBVIRT_BACKUP_DEBUG: '1' });
  t.regex(debug.stderr, /\n\s+at /, 'stack trace when debugging');
});

test('verify of a truncated file: said first, then one line per problem, qemu-img report whole only in --json', async (t) => {
  const builder = await SetBuilder.create(t, ONE_DISK);
  // Every cluster allocated and the file cut in half: the metadata survives and names
  // dozens of clusters past the end, one qemu-img check line each.
  await builder.guestWrite('vda', { pattern: 0x5c, offset: 0, length: 4 * MiB });
  const record = await builder.backup('full');
  const file = record.disks[0]!.file;
  await truncate(join(builder.dir, file), 2 * MiB);

  const run = await runCli(['verify', builder.dir]);
  t.is(run.code, 3, run.stderr);
  const lines = run.stdout.trimEnd().split('\n');
  t.is(lines[0], `error    ${file}: truncated: size is ${2 * MiB} bytes, the manifest says ${record.disks[0]!.fileSize}`);
  t.regex(lines[1]!, new RegExp(`^error    ${file.replace(/\./g, '\\.')}: checksum is `));
  const qemuImgLine = lines.find((line) => line.includes('qemu-img check'));
  t.regex(
    qemuImgLine ?? '',
    /: qemu-img check found \d+ corruptions: counting reference for region exceeding the end of the file by one cluster or more: offset 0x[0-9a-f]+ size 0x[0-9a-f]+ \((\d+) more lines from qemu-img check\)$/,
  );
  const more = Number(/\((\d+) more lines/.exec(qemuImgLine ?? '')?.[1]);
  t.true(more > 20, `qemu-img check printed ${more + 1} lines`);
  t.is(lines.length, 4, run.stdout);
  t.regex(lines.at(-1)!, /1 file of 1 backup checked, 3 errors$/);

  const json = await runCli(['verify', builder.dir, '--json']);
  const result = jsonLines(json.stdout).at(-1) as { problems: Array<{ kind: string; message: string; detail?: string }> };
  const corrupt = result.problems.find((problem) => problem.kind === 'image-corrupt');
  t.is(corrupt?.message, qemuImgLine?.replace(/^error {4}/, ''));
  t.is(corrupt?.detail?.split('\n').length, more + 1, 'every line of qemu-img check kept in detail');
  t.false(corrupt?.detail?.includes('json:'), 'the image is named by its path, not the json: target qemu-img was given');
});
