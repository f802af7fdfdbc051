// Pull backups of a hypervisor reached as a remote host: the CLI runs in a mount namespace
// that hides this host's libvirt sockets, images and temp directories, so the only way to
// the disks is the one a backup server on another machine has: libvirtd over TLS or
// TCP+SASL, and the job's NBD export over TLS on 127.0.0.1.
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import test, { type ExecutionContext } from 'ava';

import { BackupSet, restore, runBackup } from '../../src/backup/index.js';
import { JobType } from '../../src/index.js';
import { NbdClient } from '../../src/nbd/index.js';
import { jsonLines, REPO_ROOT, runCli } from '../cli/helpers.js';
import { connectSystem, IMAGE_DIR } from '../helpers/daemon.js';
import { runHidden, startHidden } from '../helpers/hiding-namespace.js';
import { tryRun } from '../helpers/process.js';
import { REMOTE_URIS, saslCredentials } from '../helpers/remote-rig.js';
import { imagesIdentical, mirroredDomain, type MirroredDomain } from './engine-helpers.js';

const MAIN = join(REPO_ROOT, 'src/cli/main.ts');
/** Outside every hidden path: where the backup server keeps its sets. */
const SETS_PARENT = '/srv/libvirt-backup-tests';

async function setParent(t: ExecutionContext): Promise<string> {
  await mkdir(SETS_PARENT, { recursive: true });
  const dir = await mkdtemp(join(SETS_PARENT, 'remote-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** `libvirt-backup ARGS` as a backup server on another host would run it. */
function cliElsewhere(args: readonly string[]) {
  return runHidden([process.execPath, '--import=tsx', MAIN, ...args], { cwd: REPO_ROOT, env: { LIBVIRT_BACKUP_DEBUG: '' } });
}

async function restoresMatch(t: ExecutionContext, m: MirroredDomain, dest: string, at: string, label: string): Promise<void> {
  const out = await mkdtemp(join(m.dir, `restored-${at}-`));
  const restored = await restore(await BackupSet.open(dest), { to: out, at, format: 'raw' });
  t.is(restored.disks.length, m.vm.disks.length);
  for (const [i, disk] of restored.disks.entries()) {
    t.true(await imagesIdentical(disk.path, 'raw', m.referenceAt(label, i), 'raw'), `${disk.target} at ${at}`);
  }
}

/** Scratch files libvirt made next to the images for this domain's jobs, if any are left. */
async function scratchLeftovers(m: MirroredDomain): Promise<string[]> {
  return (await readdir(IMAGE_DIR)).filter((name) => name.startsWith('.lvb-scratch-') && name.includes(m.vm.domain.uuid));
}

test('qemu+tls with NBD over TLS, from a host that sees none of the hypervisor: full then incremental of two disks, each point restorable', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'remote-tls', [{ sizeMiB: 64 }, { sizeMiB: 32 }]);
  const dest = join(await setParent(t), 'set');
  await m.write(0, 0x51, '0', '8M');
  await m.write(1, 0x52, '4M', '2M');
  await m.snapshot('full');

  const full = await cliElsewhere(['backup', m.vm.name, '--dest', dest, '--connect', REMOTE_URIS.tls, '--json']);
  t.is(full.code, 0, full.stderr);
  t.like(
    jsonLines(full.stdout).find((e) => e.type === 'start'),
    { level: 'full', transport: 'pull' },
  );

  await m.write(0, 0x53, '1M', '1M');
  await m.write(1, 0x54, '0', '64k');
  await m.snapshot('inc');
  const inc = await cliElsewhere(['backup', m.vm.name, '--dest', dest, '--connect', REMOTE_URIS.tls, '--json']);
  t.is(inc.code, 0, inc.stderr);
  t.like(
    jsonLines(inc.stdout).find((e) => e.type === 'start'),
    { level: 'inc' },
  );

  // The same command cannot reach the hypervisor the local way from there.
  const local = await cliElsewhere(['backup', m.vm.name, '--dest', dest, '--connect', 'qemu:///system']);
  t.not(local.code, 0);
  t.regex(local.stderr, /cannot connect to qemu:\/\/\/system/);

  await restoresMatch(t, m, dest, '0001', 'full');
  await restoresMatch(t, m, dest, '0002', 'inc');
  t.is((await m.vm.domain.getJobInfo()).type, JobType.NONE);
  t.deepEqual(await scratchLeftovers(m), [], 'libvirt removed the scratch files it kept next to the images');
});

test('qemu+tcp with a SASL password from a file: the backup works and the password appears in no output and no file of the set', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'remote-sasl', [{ sizeMiB: 16 }]);
  const parent = await setParent(t);
  const dest = join(parent, 'set');
  const { username, password } = await saslCredentials();
  const passwordFile = join(parent, 'password');
  await writeFile(passwordFile, `${password}\n`, { mode: 0o600 });
  await m.write(0, 0x61, '0', '2M');
  await m.snapshot('full');

  const run = await cliElsewhere([
    'backup',
    m.vm.name,
    '--dest',
    dest,
    '--connect',
    REMOTE_URIS.tcp,
    '--username',
    username,
    '--password-file',
    passwordFile,
    '--json',
  ]);
  t.is(run.code, 0, run.stderr);
  await restoresMatch(t, m, dest, '0001', 'full');

  const wrongFile = join(parent, 'wrong');
  const wrong = 'definitely-not-it-93f1';
  await writeFile(wrongFile, wrong, { mode: 0o600 });
  const refused = await cliElsewhere([
    'backup',
    m.vm.name,
    '--dest',
    dest,
    '--connect',
    REMOTE_URIS.tcp,
    '--username',
    username,
    '--password-file',
    wrongFile,
    '--json',
  ]);
  t.not(refused.code, 0);
  t.like(jsonLines(refused.stdout).at(-1), { type: 'error', code: 'VIR_ERR_AUTH_FAILED' });
  t.regex(refused.stderr, /cannot connect to qemu\+tcp:.*refused the credentials/);

  const outputs = [run.stdout, run.stderr, refused.stdout, refused.stderr];
  for (const name of await readdir(dest, { recursive: true })) {
    const path = join(dest, name);
    outputs.push((await readFile(path).catch(() => Buffer.alloc(0))).toString('latin1'));
  }
  for (const text of outputs) {
    t.false(text.includes(password), 'the password shows');
    t.false(text.includes(wrong), 'the wrong password shows');
  }
});

test('the export of a remote pull job speaks TLS only: a plain-text client is refused', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'remote-plain', [{ sizeMiB: 16 }]);
  const dest = join(await setParent(t), 'set');
  await m.write(0, 0x71, '0', '1M');
  let checked = false;
  await runBackup({
    domain: m.vm.name,
    dest,
    uri: REMOTE_URIS.tls,
    hooks: {
      afterJobStart: async () => {
        const spec = await m.vm.domain.backupGetSpec();
        if (spec.mode !== 'pull' || spec.server.transport === 'unix' || spec.server.transport === 'fd') throw new Error('not a TCP pull job');
        t.is(spec.server.tls, 'yes');
        const port = spec.server.port!;
        t.true(port >= 10809 && port <= 10999, `port ${port}`);
        await t.throwsAsync(NbdClient.connect({ host: '127.0.0.1', port, exportName: 'vda' }), { message: /TLS|tls/ });
        const nbdinfo = await tryRun('nbdinfo', [`nbd://127.0.0.1:${port}/vda`]);
        t.not(nbdinfo.code, 0, nbdinfo.stdout);
        checked = true;
      },
    },
  });
  t.true(checked);
});

test('push on a remote URI is refused unless the destination is declared shared', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'remote-push', [{ sizeMiB: 16 }]);
  const dest = join(await setParent(t), 'set');
  await m.write(0, 0x81, '0', '1M');
  await m.snapshot('full');
  const refused = await runCli(['backup', m.vm.name, '--dest', dest, '--connect', REMOTE_URIS.tls, '--transport', 'push']);
  t.is(refused.code, 2);
  t.regex(refused.stderr, /on its own file system.*--dest-shared/);
  await t.throwsAsync(readdir(dest), { code: 'ENOENT' });

  // Here the "shared storage" is the same disk: the files land where both sides see them.
  const shared = await runCli(['backup', m.vm.name, '--dest', dest, '--connect', REMOTE_URIS.tls, '--transport', 'push', '--dest-shared']);
  t.is(shared.code, 0, shared.stderr);
  await restoresMatch(t, m, dest, '0001', 'full');
});

test('a remote pull run killed outright is recognised by the next one from its NBD server: the job is ended and the set stays whole', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'remote-kill', [{ sizeMiB: 512 }]);
  const dest = join(await setParent(t), 'set');
  await m.write(0, 0x91, '0', '4M');
  await m.snapshot('full');
  const first = await cliElsewhere(['backup', m.vm.name, '--dest', dest, '--connect', REMOTE_URIS.tls]);
  t.is(first.code, 0, first.stderr);
  const manifest = await readFile(join(dest, 'manifest.json'));
  await m.write(0, 0x92, '0', '400M');

  const killed = startHidden(
    [process.execPath, '--import=tsx', MAIN, 'backup', m.vm.name, '--dest', dest, '--connect', REMOTE_URIS.tls, '--level', 'full', '--json'],
    {
      cwd: REPO_ROOT,
    },
  );
  await killed.waitForLine((line) => line.includes('"type":"progress"'));
  killed.child.kill('SIGKILL');
  await killed.done;
  t.not((await m.vm.domain.getJobInfo()).type, JobType.NONE, 'the pull job outlives its client');
  t.deepEqual(await readFile(join(dest, 'manifest.json')), manifest);

  await m.snapshot('after');
  const next = await cliElsewhere(['backup', m.vm.name, '--dest', dest, '--connect', REMOTE_URIS.tls, '--json']);
  t.is(next.code, 0, next.stderr);
  t.true(
    jsonLines(next.stdout).some((e) => e.type === 'notice' && /ended the pull backup job \(NBD server 127\.0\.0\.1:\d+\)/.test(String(e.message))),
    next.stdout,
  );
  await restoresMatch(t, m, dest, '0001', 'full');
  await restoresMatch(t, m, dest, '0002', 'after');
  t.is((await m.vm.domain.getJobInfo()).type, JobType.NONE);
  t.deepEqual(await scratchLeftovers(m), []);
});
