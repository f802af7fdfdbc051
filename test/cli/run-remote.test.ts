// `libvirt-backup run --overlay-pool` on a remote hypervisor: over qemu+tls:// from a mount
// namespace that hides this host's libvirt sockets, images and temporary directories, the
// overlays are made by libvirt as volumes of a storage pool there, backed by the set's
// files at the path they have on both sides (here the same host stands for shared storage).
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import test from 'ava';

import { DomainState } from '../../src/index.js';
import { imagesIdentical, mirroredDomain } from '../backup/engine-helpers.js';
import { connectSystem, destroyAndUndefine, uniqueName } from '../helpers/daemon.js';
import { runHidden } from '../helpers/hiding-namespace.js';
import { run } from '../helpers/process.js';
import { REMOTE_URIS } from '../helpers/remote-rig.js';
import { createThrowawayPool } from '../helpers/storage-pool.js';
import { REPO_ROOT, jsonLines, runCli } from './helpers.js';

const CLI_MAIN = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
const HIDDEN = ['/run/libvirt', '/var/lib/libvirt', '/tmp', '/var/tmp'];

test('run over qemu+tls:// with --overlay-pool: the new domain runs on pool volumes backed by the set, holding the point', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'run-remote', [{ sizeMiB: 16 }, { sizeMiB: 16 }]);
  // Outside everything the namespace hides: the set both sides see at one path.
  const shared = join('/var/cache', uniqueName('run-remote-set'));
  await mkdir(shared, { recursive: true, mode: 0o700 });
  t.teardown(() => rm(shared, { recursive: true, force: true }));
  const dest = join(shared, 'set');
  await m.write(0, 0x31, '0', '2M');
  await m.write(1, 0x32, '4M', '1M');
  t.is((await runCli(['backup', m.vm.name, '--dest', dest])).code, 0);
  await m.snapshot('first');
  await m.write(0, 0x33, '8M', '1M');
  t.is((await runCli(['backup', m.vm.name, '--dest', dest])).code, 0);
  const throwaway = await createThrowawayPool(conn, 'run-remote');
  t.teardown(throwaway.cleanup);
  const name = uniqueName('ran-remote');
  t.teardown(async () => {
    const domain = await conn.lookupDomainByName(name).catch(() => undefined);
    if (domain !== undefined) await destroyAndUndefine(domain);
  });
  const cli = (...argv: string[]) =>
    runHidden([process.execPath, '--import=tsx', CLI_MAIN, ...argv], { hidden: HIDDEN, cwd: REPO_ROOT, env: { LIBVIRT_BACKUP_DEBUG: '' } });

  const refused = await cli('run', dest, '--name', name, '--connect', REMOTE_URIS.tls);
  t.is(refused.code, 2, refused.stderr);
  t.regex(
    refused.stderr,
    /on a remote hypervisor \(qemu\+tls:\/\/127\.0\.0\.1\/system\) the overlays are made in one of its storage pools \(--overlay-pool POOL\)/,
  );

  const ran = await cli('run', dest, '--at', '0001', '--name', name, '--connect', REMOTE_URIS.tls, '--overlay-pool', throwaway.name, '--json');
  t.is(ran.code, 0, ran.stderr);
  const result = jsonLines(ran.stdout).at(-1) as { overlays: Array<{ target: string; path: string; backingFile: string }> };
  const domain = await conn.lookupDomainByName(name);
  t.is((await domain.getState()).state, DomainState.RUNNING);
  for (const [index, overlay] of result.overlays.entries()) {
    t.is(overlay.path, join(throwaway.path, `${name}-${overlay.target}.overlay.qcow2`));
    t.true(overlay.backingFile.startsWith(`${dest}/`), overlay.backingFile);
    t.regex(await domain.getXMLDesc(), new RegExp(`<source file=['"]${overlay.path.replace(/[.]/g, '\\.')}['"]`));
    const info = JSON.parse(await run('qemu-img', ['info', '-U', '--output=json', overlay.path])) as { 'backing-filename'?: string };
    t.is(info['backing-filename'], overlay.backingFile);
    t.true(await imagesIdentical(overlay.path, 'qcow2', m.referenceAt('first', index), 'raw'), `${overlay.target} holds point 0001`);
  }
});
