// `libvirt-backup restore --pool --define`: a real domain backed up, restored into new
// volumes through libvirt streams, defined as a new domain and booted; locally, and over
// qemu+tls:// from a mount namespace where this host's libvirt sockets, images and
// temporary directories are hidden, so nothing local can stand in for the daemon.
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import test, { type ExecutionContext } from 'ava';

import { BackupSet } from '../../src/backup/index.js';
import { DomainState, type Connection } from '../../src/index.js';
import { imagesIdentical, mirroredDomain, type MirroredDomain } from '../backup/engine-helpers.js';
import { connectSystem, destroyAndUndefine, uniqueName } from '../helpers/daemon.js';
import { runHidden as runHiddenCommand } from '../helpers/hiding-namespace.js';
import { REMOTE_URIS, saslCredentials } from '../helpers/remote-rig.js';
import { createThrowawayPool, type ThrowawayPool } from '../helpers/storage-pool.js';
import { REPO_ROOT, jsonLines, runCli, type CliRun } from './helpers.js';

const CLI_MAIN = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
/** What a client on another host would not see of this one. */
const HIDDEN = ['/run/libvirt', '/var/lib/libvirt', '/tmp', '/var/tmp'];

/** Runs `argv` inside a mount namespace that hides HIDDEN behind empty tmpfs mounts. */
function runHidden(argv: readonly string[]): Promise<CliRun> {
  return runHiddenCommand(argv, { hidden: HIDDEN, cwd: REPO_ROOT, env: { LIBVIRT_BACKUP_DEBUG: '' } });
}

/** A domain with two disks, backed up full then incremental into `dest`. */
async function backedUpDomain(t: ExecutionContext, conn: Connection, label: string, dest: string): Promise<MirroredDomain> {
  const m = await mirroredDomain(t, conn, label, [{ sizeMiB: 32 }, { sizeMiB: 16 }]);
  await m.write(0, 0x21, '0', '3M');
  await m.write(1, 0x22, '8M', '1M');
  t.is((await runCli(['backup', m.vm.name, '--dest', dest])).code, 0);
  await m.write(0, 0x23, '20M', '2M');
  await m.write(1, 0x24, '0', '512k');
  t.is((await runCli(['backup', m.vm.name, '--dest', dest])).code, 0);
  await m.snapshot('inc');
  return m;
}

/** The restored domain boots, its disks are the new volumes, and they equal the backup point. */
async function checkRestored(
  t: ExecutionContext,
  conn: Connection,
  m: MirroredDomain,
  throwaway: ThrowawayPool,
  name: string,
  result: Record<string, unknown>,
): Promise<void> {
  const restored = await conn.lookupDomainByName(name);
  t.teardown(() => destroyAndUndefine(restored));
  t.not(restored.uuid, m.vm.domain.uuid);
  t.like(result, { type: 'result', command: 'restore', backupId: '0002', pool: throwaway.name, domain: { name, uuid: restored.uuid } });
  const xml = await restored.getXMLDesc();
  for (const target of ['vda', 'vdb']) {
    t.regex(
      xml,
      new RegExp(
        `<disk type=['"]volume['"][^>]*>\\s*<driver name=['"]qemu['"] type=['"]qcow2['"]/>\\s*<source pool=['"]${throwaway.name}['"] volume=['"]${name}-${target}\\.qcow2['"]`,
      ),
    );
  }
  t.notRegex(xml, new RegExp(m.vm.name));
  await restored.start();
  t.is((await restored.getState()).state, DomainState.RUNNING);
  await restored.destroy();
  for (const [index, target] of ['vda', 'vdb'].entries()) {
    const volume = await throwaway.pool.lookupVolumeByName(`${name}-${target}.qcow2`);
    t.true(await imagesIdentical(await volume.getPath(), 'qcow2', m.referenceAt('inc', index), 'raw'), `${target} equals the backup point`);
  }
  // The domain it came from is untouched and still running.
  t.true(await m.vm.domain.isActive());
}

test('restore --pool --define on qemu:///system: new volumes, a new domain that boots, equal to the backup point', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const throwaway = await createThrowawayPool(conn, 'cli-pool');
  t.teardown(throwaway.cleanup);
  const dest = join(await mkdtempVisible(t), 'set');
  const m = await backedUpDomain(t, conn, 'cli-pool', dest);
  const name = uniqueName('restored');
  const done = await runCli(['restore', dest, '--pool', throwaway.name, '--connect', 'qemu:///system', '--define', name, '--json']);
  t.is(done.code, 0, done.stderr);
  const lines = jsonLines(done.stdout);
  t.true(lines.some((line) => line['type'] === 'progress'));
  await checkRestored(t, conn, m, throwaway, name, lines.at(-1)!);

  // Again: the name and the volumes are taken; refused before anything changes.
  const again = await runCli(['restore', dest, '--pool', throwaway.name, '--define', name]);
  t.is(again.code, 2, again.stderr);
  t.regex(
    again.stderr,
    new RegExp(`volume '${name}-vda\\.qcow2' already exists in storage pool '${throwaway.name}' on qemu:///system; restore never overwrites a volume`),
  );
  t.is((await throwaway.pool.listAllVolumes()).length, 2);

  // Without --define, volumes are named after the set's domain and the backup; human output says what was sent.
  const plain = await runCli(['restore', dest, '--pool', throwaway.name, '--at', '0001', '--format', 'raw']);
  t.is(plain.code, 0, plain.stderr);
  t.regex(
    plain.stdout,
    new RegExp(
      `^restored backup 0001 of ${m.vm.name} into storage pool ${throwaway.name} on qemu:///system as raw:\\n  vda  ${m.vm.name}-0001-vda\\.raw  \\(.*; sent .* of data, .* as holes\\)`,
    ),
  );
});

test('restore --pool --define over qemu+tls:// from a namespace that hides everything local', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  // The client side sees no local libvirt at all.
  const local = await runHidden(['virsh', '-c', 'qemu:///system', 'list']);
  t.not(local.code, 0);
  t.regex(local.stderr, /No such file or directory/);
  const throwaway = await createThrowawayPool(conn, 'cli-tls');
  t.teardown(throwaway.cleanup);
  const dest = join(await mkdtempVisible(t), 'set');
  const m = await backedUpDomain(t, conn, 'cli-tls', dest);
  const name = uniqueName('restored-tls');
  const done = await runHidden([
    process.execPath,
    '--import=tsx',
    CLI_MAIN,
    'restore',
    dest,
    '--pool',
    throwaway.name,
    '--connect',
    REMOTE_URIS.tls,
    '--define',
    name,
    '--json',
  ]);
  t.is(done.code, 0, done.stderr);
  await checkRestored(t, conn, m, throwaway, name, jsonLines(done.stdout).at(-1)!);
  const set = await BackupSet.open(dest);
  t.teardown(() => set.close());
  t.is(set.backups.length, 2);
});

/** A directory outside everything the namespace hides (the set a remote restore reads). */
async function mkdtempVisible(t: ExecutionContext): Promise<string> {
  const dir = join('/var/cache', uniqueName('restore-set'));
  await mkdir(dir, { recursive: true, mode: 0o700 });
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test('a domain name that is taken is refused before any volume is made', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const throwaway = await createThrowawayPool(conn, 'cli-taken');
  t.teardown(throwaway.cleanup);
  const dest = join(await mkdtempVisible(t), 'set');
  const m = await backedUpDomain(t, conn, 'cli-taken', dest);
  const taken = await runCli(['restore', dest, '--pool', throwaway.name, '--define', m.vm.name]);
  t.is(taken.code, 2, taken.stderr);
  t.regex(taken.stderr, new RegExp(`a domain named '${m.vm.name}' already exists on qemu:///system`));
  // Over qemu+tcp:// with the rig's SASL user: the credentials come from --username and --password-file.
  const { username, password } = await saslCredentials();
  const passwordFile = join(dirname(dest), 'password');
  await writeFile(passwordFile, `${password}\n`, { mode: 0o600 });
  const overTcp = await runCli([
    'restore',
    dest,
    '--pool',
    throwaway.name,
    '--connect',
    REMOTE_URIS.tcp,
    '--username',
    username,
    '--password-file',
    passwordFile,
    '--define',
    m.vm.name,
  ]);
  t.is(overTcp.code, 2, overTcp.stderr);
  t.regex(overTcp.stderr, new RegExp(`a domain named '${m.vm.name}' already exists on ${REMOTE_URIS.tcp.replace(/[+/.]/g, '\\$&')}`));
  t.false(overTcp.stderr.includes(password));
  t.deepEqual(await throwaway.pool.listAllVolumes(), []);
  const usage = await runCli(['restore', dest, '--pool', throwaway.name, '--to', '/tmp/x']);
  t.is(usage.code, 2);
  t.regex(usage.stderr, /'--to' and '--pool' exclude each other/);
  const missing = await runCli(['restore', dest, '--pool', 'lvbt-no-such-pool']);
  t.not(missing.code, 0);
  t.regex(missing.stderr, /qemu:\/\/\/system has no storage pool 'lvbt-no-such-pool'/);
});
