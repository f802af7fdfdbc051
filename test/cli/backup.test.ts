// `libvirt-backup backup` as operators run it: a child process against the real
// daemon, checked through exit codes, JSON lines and the files it leaves.
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import test from 'ava';

import { BackupSet, restore } from '../../src/backup/index.js';
import { JobType } from '../../src/index.js';
import { imagesIdentical, mirroredDomain } from '../backup/engine-helpers.js';
import { connectSystem } from '../helpers/daemon.js';
import { jsonLines, runCli, startCli } from './helpers.js';

test('backup: full then auto incremental, with JSON events and a restorable result', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'cli-backup', [{ sizeMiB: 32 }, { sizeMiB: 16, format: 'raw' }]);
  const dest = join(m.dir, 'set');
  await m.write(0, 0x11, '0', '4M');
  const full = await runCli(['backup', m.vm.name, '--dest', dest, '--json']);
  t.is(full.code, 0, full.stderr);
  const fullEvents = jsonLines(full.stdout);
  t.is(fullEvents[0]?.type, 'notice');
  t.true(fullEvents.some((e) => e.type === 'start' && e.level === 'full'));
  t.is(fullEvents.at(-1)?.type, 'result');

  await m.write(0, 0x22, '8M', '1M');
  await m.snapshot('inc');
  const inc = await runCli(['backup', m.vm.name, '--dest', dest, '--transport', 'push']);
  t.is(inc.code, 0, inc.stderr);
  t.regex(inc.stdout, /backup 0002 of .*: inc \(push\)/);
  t.regex(inc.stderr, /vdb: full copy/);

  const listed = await runCli(['list', dest]);
  t.regex(listed.stdout, /0002\s+inc\s+no\s+0001/);
  t.is((await runCli(['verify', dest])).code, 0);
  const out = join(m.dir, 'restored');
  await mkdir(out);
  const restored = await restore(await BackupSet.open(dest), { to: out, format: 'raw' });
  for (const [i, disk] of restored.disks.entries()) t.true(await imagesIdentical(disk.path, 'raw', m.referenceAt('inc', i), 'raw'));
});

test('backup: SIGINT halfway ends the job, removes the run, keeps the manifest; the next auto backup works', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'cli-sigint', [{ sizeMiB: 768 }]);
  const dest = join(m.dir, 'set');
  await m.write(0, 0x31, '0', '4M');
  t.is((await runCli(['backup', m.vm.name, '--dest', dest])).code, 0);
  const manifest = await readFile(join(dest, 'manifest.json'));
  const files = (await readdir(dest)).sort();
  await m.write(0, 0x32, '0', '640M');

  const cli = startCli(['backup', m.vm.name, '--dest', dest, '--level', 'full', '--json']);
  await cli.waitForLine((line) => line.includes('"type":"progress"'));
  cli.child.kill('SIGINT');
  const interrupted = await cli.done;
  t.is(interrupted.code, 130, interrupted.stderr);
  t.regex(interrupted.stderr, /interrupted/);
  t.is((await m.vm.domain.getJobInfo()).type, JobType.NONE);
  t.deepEqual((await readdir(dest)).sort(), files, 'no partial file remains');
  t.deepEqual(await readFile(join(dest, 'manifest.json')), manifest);

  const next = await runCli(['backup', m.vm.name, '--dest', dest, '--json']);
  t.is(next.code, 0, next.stderr);
  t.true(jsonLines(next.stdout).some((e) => e.type === 'start' && e.level === 'inc'));
});

test('backup: bad input gives a clear message, a non-zero exit, and changes nothing', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'cli-bad', [{ sizeMiB: 16 }]);
  const other = await mirroredDomain(t, conn, 'cli-other', [{ sizeMiB: 16 }]);
  const dest = join(m.dir, 'set');
  t.is((await runCli(['backup', m.vm.name, '--dest', dest])).code, 0);
  await m.write(0, 0x41, '0', '64k');
  t.is((await runCli(['backup', m.vm.name, '--dest', dest])).code, 0);
  const snapshot = async () => ({
    manifest: await readFile(join(dest, 'manifest.json')),
    files: (await readdir(dest)).sort(),
  });
  const before = await snapshot();

  const unknown = await runCli(['backup', 'lvbt-no-such-domain', '--dest', dest]);
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /libvirt-backup: no domain named 'lvbt-no-such-domain'/);

  const unwritable = await runCli(['backup', m.vm.name, '--dest', join(dest, 'manifest.json', 'sub')]);
  t.not(unwritable.code, 0);
  t.regex(unwritable.stderr, /manifest\.json/);

  const foreign = await runCli(['backup', other.vm.name, '--dest', dest]);
  t.is(foreign.code, 2);
  t.regex(foreign.stderr, new RegExp(m.vm.name));
  t.deepEqual(await snapshot(), before);

  // A missing backing file: an incremental is never built on a broken chain.
  const full = (await BackupSet.open(dest)).backups[0]!.disks[0]!.file;
  await rm(join(dest, full));
  const broken = await runCli(['backup', m.vm.name, '--dest', dest, '--level', 'inc']);
  t.is(broken.code, 2, broken.stderr);
  t.regex(broken.stderr, new RegExp(`backing file ${full.replace(/\./g, '\\.')} is missing`));
  t.is((await m.vm.domain.getJobInfo()).type, JobType.NONE);

  await writeFile(join(dest, 'manifest.json'), '{"format":');
  const corrupt = await runCli(['backup', m.vm.name, '--dest', dest]);
  t.is(corrupt.code, 2);
  t.regex(corrupt.stderr, /manifest\.json/);
  t.is(await readFile(join(dest, 'manifest.json'), 'utf8'), '{"format":');
});

test('backup: a run killed outright is detected and cleaned up by the next run', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'cli-crash', [{ sizeMiB: 768 }]);
  const dest = join(m.dir, 'set');
  await m.write(0, 0x61, '0', '4M');
  t.is((await runCli(['backup', m.vm.name, '--dest', dest])).code, 0);
  const files = (await readdir(dest)).sort();
  await m.write(0, 0x62, '0', '640M');

  const cli = startCli(['backup', m.vm.name, '--dest', dest, '--level', 'full', '--json']);
  await cli.waitForLine((line) => line.includes('"type":"progress"'));
  cli.child.kill('SIGKILL');
  await cli.done;
  // What a crash leaves: libvirt's pull job still running, a journal and partial files.
  t.not((await m.vm.domain.getJobInfo()).type, JobType.NONE);
  t.true((await readdir(dest)).includes('.in-progress.json'));

  await m.snapshot('after');
  const next = await runCli(['backup', m.vm.name, '--dest', dest, '--json']);
  t.is(next.code, 0, next.stderr);
  const notices = jsonLines(next.stdout)
    .filter((e) => e.type === 'notice')
    .map((e) => String(e.message));
  t.true(
    notices.some((n) => n.includes('left behind by an interrupted run')),
    notices.join('\n'),
  );
  t.true(
    notices.some((n) => n.startsWith('cleaned up after an interrupted run')),
    notices.join('\n'),
  );
  const set = await BackupSet.open(dest);
  t.deepEqual(
    set.backups.map((b) => b.level),
    ['full', 'inc'],
  );
  t.deepEqual((await readdir(dest)).sort(), [...files, ...set.backups[1]!.disks.map((d) => d.file)].sort());
  const out = join(m.dir, 'restored');
  await mkdir(out);
  const restored = await restore(set, { to: out, format: 'raw' });
  t.true(await imagesIdentical(restored.disks[0]!.path, 'raw', m.referenceAt('after', 0), 'raw'));
});
