import test from 'ava';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { open, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { checksumFile } from '../../src/backup/checksum.js';
import { MiB, SetBuilder, TWO_DISKS, buildSet, imagesEqual, qemuImg, tempDir } from '../backup/helpers.js';
import { REPO_ROOT, jsonLines, runCli, startCli } from './helpers.js';

const CLI_MAIN = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

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

test('a damaged chain file: exit 3 and nothing written; --no-verify restores it with a notice', async (t) => {
  const builder = await buildSet(t, ['full', 'inc']);
  const damaged = join(builder.dir, 'vda.0001.full.qcow2');
  const map = JSON.parse(await qemuImg('map', '--output=json', damaged)) as Array<{ data: boolean; offset?: number }>;
  const at = map.find((extent) => extent.data && extent.offset !== undefined)!.offset! + 1000;
  const handle = await open(damaged, 'r+');
  await handle.write(Buffer.from([0x5a]), 0, 1, at);
  await handle.close();
  const out = await tempDir(t, 'cli-restore-');
  const run = await runCli(['restore', builder.dir, '--to', out, '--format', 'raw', '--json']);
  t.is(run.code, 3, run.stderr);
  t.like(jsonLines(run.stdout).at(-1), { type: 'error', code: 'CHECKSUM_MISMATCH', exitCode: 3 });
  t.regex(
    run.stderr,
    /^libvirt-backup: vda\.0001\.full\.qcow2: checksum is xxh128:[0-9a-f]{32}, the manifest says xxh128:[0-9a-f]{32}; the file is damaged\n$/,
  );
  t.deepEqual(await readdir(out), []);

  const salvage = await runCli(['restore', builder.dir, '--to', out, '--format', 'raw', '--no-verify']);
  t.is(salvage.code, 0, salvage.stderr);
  t.regex(salvage.stderr, /^vda\.0001\.full\.qcow2: checksum is .*; the file is damaged; restored anyway because checksum verification is off$/m);
  t.deepEqual(await readdir(out), ['vda.raw']);
  t.false(await imagesEqual(join(out, 'vda.raw'), builder.referenceAt('vda', '0002')), 'the damage is in the output, as asked');
});

test('the chain is read once, by our own reader: no qemu-img needed', async (t) => {
  const builder = await buildSet(t, ['full', 'inc', 'diff'], TWO_DISKS);
  const out = await tempDir(t, 'cli-restore-');
  const run = await runCli(['restore', builder.dir, '--to', out, '--json'], { LIBVIRT_BACKUP_QEMU_IMG: '/nonexistent/qemu-img' });
  t.is(run.code, 0, run.stderr);
  const result = jsonLines(run.stdout).at(-1)!;
  const disks = result['disks'] as Array<{ target: string; method: string; bytesRead: number; chain: string[] }>;
  for (const disk of disks) {
    const chainBytes = builder.set.chainFor(disk.target, '0003').reduce((sum, link) => sum + link.disk.fileSize, 0);
    t.is(disk.method, 'one-pass');
    t.is(disk.bytesRead, chainBytes, `${disk.target}: every byte of ${disk.chain.join(', ')} read once`);
    t.true(await imagesEqual(join(out, `${disk.target}.qcow2`), builder.referenceAt(disk.target, '0003')));
  }
});

/** Runs the CLI under a shell that sets the umask first. */
function runWithUmask(umask: string, args: readonly string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', 'umask "$1"; shift; exec "$@"', 'sh', umask, process.execPath, '--import=tsx', CLI_MAIN, ...args], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

test('restored images are 0600 whatever the umask', async (t) => {
  const builder = await buildSet(t, ['full', 'inc']);
  for (const umask of ['000', '022', '077']) {
    for (const format of ['qcow2', 'raw'] as const) {
      const out = await tempDir(t, 'cli-restore-');
      const run = await runWithUmask(umask, ['restore', builder.dir, '--to', out, '--format', format]);
      t.is(run.code, 0, run.stderr);
      t.is((await stat(join(out, `vda.${format}`))).mode & 0o7777, 0o600, `umask ${umask}, ${format}`);
    }
  }
});

/** The children of process `pid` whose command line is qemu-img's. */
async function qemuImgChildrenOf(pid: number): Promise<number[]> {
  const children: number[] = [];
  for (const task of await readdir(`/proc/${pid}/task`).catch(() => [] as string[])) {
    const listed = await readFile(`/proc/${pid}/task/${task}/children`, 'utf8').catch(() => '');
    for (const child of listed.split(' ').filter((word) => word !== '')) {
      const commandLine = await readFile(`/proc/${child}/cmdline`, 'utf8').catch(() => '');
      if (commandLine.split('\0')[0]!.endsWith('qemu-img')) children.push(Number(child));
    }
  }
  return children;
}

/** qemu-img processes whose command line names `path`. */
async function qemuImgProcessesFor(path: string): Promise<string[]> {
  const found: string[] = [];
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const commandLine = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (commandLine.includes('qemu-img') && commandLine.includes(path)) found.push(commandLine.replaceAll('\0', ' '));
  }
  return found;
}

test('SIGKILL mid-restore leaves a partial; the next restore removes it, says so and succeeds', async (t) => {
  const size = 512 * MiB;
  const builder = await SetBuilder.create(t, [{ target: 'vda', sourceFormat: 'qcow2', size }]);
  const reference = await open(builder.referencePath('vda'), 'r+');
  for (let offset = 0; offset < size; offset += 16 * MiB) await reference.write(randomBytes(16 * MiB), 0, 16 * MiB, offset);
  await reference.close();
  await builder.backup('full');
  const out = await tempDir(t, 'cli-restore-');

  const cli = startCli(['restore', builder.dir, '--to', out, '--format', 'raw', '--json']);
  await cli.waitForLine((line) => line.includes('"type":"progress"'));
  cli.child.kill('SIGKILL');
  const killed = await cli.done;
  t.is(killed.signal, 'SIGKILL', 'killed before it finished');
  const left = await readdir(out);
  t.is(left.length, 1);
  t.regex(left[0]!, new RegExp(`^\\.vda\\.raw\\.partial-.+-${cli.child.pid}-[0-9a-f]{8}$`));

  const again = await runCli(['restore', builder.dir, '--to', out, '--format', 'raw']);
  t.is(again.code, 0, again.stderr);
  t.regex(
    again.stderr,
    new RegExp(
      `^removed ${out}/\\.vda\\.raw\\.partial-\\S+ \\(\\d.*\\): the partial vda\\.raw of a restore \\(pid ${cli.child.pid}\\) that did not finish$`,
      'm',
    ),
  );
  t.deepEqual(await readdir(out), ['vda.raw']);
  t.true(await imagesEqual(join(out, 'vda.raw'), builder.referenceAt('vda', '0001')));
  t.deepEqual(await qemuImgProcessesFor(out), [], 'no qemu-img left running');
});

test('SIGKILL during a qemu-img fallback takes qemu-img down too; the next restore cleans up', async (t) => {
  const size = 512 * MiB;
  const builder = await SetBuilder.create(t, [{ target: 'vda', sourceFormat: 'qcow2', size }]);
  const reference = await open(builder.referencePath('vda'), 'r+');
  for (let offset = 0; offset < size; offset += 16 * MiB) await reference.write(randomBytes(16 * MiB), 0, 16 * MiB, offset);
  await reference.close();
  await builder.backup('full');
  // Rewritten with extended L2 entries, which our reader leaves to qemu-img; the manifest follows.
  const file = join(builder.dir, 'vda.0001.full.qcow2');
  await qemuImg('convert', '-f', 'qcow2', '-O', 'qcow2', '-o', 'extended_l2=on', file, `${file}.new`);
  await rename(`${file}.new`, file);
  const manifestPath = join(builder.dir, 'manifest.json');
  const manifest = JSON.parse(await readFile(manifestPath, 'utf8')) as { backups: Array<{ disks: Array<{ checksum: string; fileSize: number }> }> };
  manifest.backups[0]!.disks[0]!.checksum = await checksumFile(file);
  manifest.backups[0]!.disks[0]!.fileSize = (await stat(file)).size;
  await writeFile(manifestPath, JSON.stringify(manifest, null, 2));
  const out = await tempDir(t, 'cli-restore-');

  const cli = startCli(['restore', builder.dir, '--to', out, '--format', 'qcow2', '--json']);
  await cli.waitForLine((line) => line.includes('"type":"notice"') && line.includes('qemu-img convert instead'));
  // The first progress line of the conversion: qemu-img is running (it is our child: setpriv execs into it).
  await cli.waitForLine((line) => line.includes('"type":"progress"') && Number(JSON.parse(line).bytesDone) > size / 2);
  const converting = await qemuImgChildrenOf(cli.child.pid!);
  t.is(converting.length, 1, 'qemu-img is converting');
  cli.child.kill('SIGKILL');
  let running = converting.map(String);
  t.is((await cli.done).signal, 'SIGKILL');
  // The kernel sends it SIGKILL when its parent dies (setpriv --pdeathsig); a write of
  // progress to its closed stdout would end it too, but only once it prints.
  for (let wait = 0; wait < 100 && running.length > 0; wait++) {
    await sleep(20);
    running = await qemuImgProcessesFor(out);
  }
  t.deepEqual(running, [], 'qemu-img died with the restore');
  t.false(
    await readFile(`/proc/${converting[0]}/cmdline`, 'utf8').then(
      (text) => text.includes('qemu-img'),
      () => false,
    ),
    'that process is gone',
  );

  const again = await runCli(['restore', builder.dir, '--to', out, '--format', 'qcow2']);
  t.is(again.code, 0, again.stderr);
  t.regex(again.stderr, new RegExp(`^removed ${out}/\\.vda\\.qcow2\\.partial-\\S+ .*\\(pid ${cli.child.pid}\\)`, 'm'));
  t.regex(again.stdout, /converted by qemu-img/);
  t.deepEqual(await readdir(out), ['vda.qcow2']);
  t.true(await imagesEqual(join(out, 'vda.qcow2'), builder.referenceAt('vda', '0001')));
});
