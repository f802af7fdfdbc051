// The recovery commands as a user runs them: run, prune refused while the recovered
// domain runs from the set, verify unaffected, migrate-storage with --json progress,
// prune allowed again; export read by our own NBD client equals restore of the point.
import { copyFile, mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import test from 'ava';

import { BackupSet, restore } from '../../src/backup/index.js';
import { NbdClient, NbdOptionError } from '../../src/nbd/index.js';
import { backedUpDomain, diskSources } from '../backup/recovery-helpers.js';
import { makeCa, makeSignedCert } from '../helpers/certificates.js';
import { connectSystem, destroyAndUndefine, uniqueName } from '../helpers/daemon.js';
import { jsonLines, runCli, startCli } from './helpers.js';

async function scratch(t: { teardown(fn: () => Promise<void>): void }, label: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `lvb-${label}-`));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test('run, prune refused naming the domain, verify passes, migrate-storage --json, then prune works', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const { dest, points } = await backedUpDomain(t, conn, 'cli-run');
  const overlays = await scratch(t, 'cli-overlays');
  const permanent = await scratch(t, 'cli-permanent');
  const name = uniqueName('run');
  t.teardown(async () => {
    const domain = await conn.lookupDomainByName(name).catch(() => null);
    if (domain !== null) await destroyAndUndefine(domain);
  });

  const ran = await runCli(['run', dest, '--at', points[0]!, '--name', name, '--overlay-dir', overlays]);
  t.is(ran.code, 0, ran.stderr);
  t.regex(ran.stdout, new RegExp(`domain ${name} \\(uuid [0-9a-f-]{36}\\) runs from backup ${points[0]} of ${dest}, started in [\\d.]+ s`));
  t.regex(ran.stdout, /migrate-storage/);
  t.true(await (await conn.lookupDomainByName(name)).isActive());

  const refused = await runCli(['prune', dest, '--keep', '1', '--json']);
  t.is(refused.code, 1, refused.stdout);
  const error = jsonLines(refused.stdout).at(-1)!;
  t.is(error['code'], 'SET_IN_USE');
  t.regex(String(error['message']), new RegExp(`domain '${name}' .*running.* runs from backup ${points[0]}`));

  const verified = await runCli(['verify', dest]);
  t.is(verified.code, 0, verified.stdout + verified.stderr);

  const moved = await runCli(['migrate-storage', name, '--to', permanent, '--json']);
  t.is(moved.code, 0, moved.stderr);
  const lines = jsonLines(moved.stdout);
  t.true(
    lines.some((line) => line['type'] === 'progress' && line['target'] === 'vda'),
    moved.stdout,
  );
  const result = lines.at(-1)!;
  t.is(result['type'], 'result');
  t.is(result['releasedSet'], dest);
  t.deepEqual(await diskSources(name), { vda: join(permanent, `${name}-vda.qcow2`), vdb: join(permanent, `${name}-vdb.qcow2`) });

  const pruned = await runCli(['prune', dest, '--keep', '1']);
  t.is(pruned.code, 0, pruned.stderr);
  t.regex(pruned.stdout, new RegExp(`removed backup ${points[0]}`));
});

test('usage errors of the recovery commands name what is wrong', async (t) => {
  const both = await runCli(['migrate-storage', 'vm', '--to', '/tmp', '--pool', 'default']);
  t.is(both.code, 2);
  t.regex(both.stderr, /'--to' and '--pool' exclude each other/);
  const noName = await runCli(['run', '/nonexistent']);
  t.is(noName.code, 2);
  t.regex(noName.stderr, /--name/);
  const tcpWithoutTls = await runCli(['export', '/nonexistent', '--disk', 'vda', '--tcp', '127.0.0.1:10900']);
  t.is(tcpWithoutTls.code, 2);
  t.regex(tcpWithoutTls.stderr, /'--tcp' needs '--tls-dir DIR'/);
  const badPort = await runCli(['export', '/nonexistent', '--disk', 'vda', '--tcp', 'localhost:99999', '--tls-dir', '/tmp']);
  t.regex(badPort.stderr, /--tcp must be HOST:PORT/);
});

test('export serves a point read-only over NBD until interrupted: our NBD client reads exactly what restore writes', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const { dest, points } = await backedUpDomain(t, conn, 'cli-export');
  const work = await scratch(t, 'cli-export');
  const socket = join(work, 'vda.sock');

  const exporting = startCli(['export', dest, '--at', points[0]!, '--disk', 'vda', '--socket', socket, '--json']);
  t.teardown(() => void exporting.child.kill('SIGKILL'));
  const ready = JSON.parse(await exporting.waitForLine((line) => line.includes('"export-ready"'))) as Record<string, unknown>;
  t.is(ready['uri'], `nbd+unix:///vda?socket=${socket}`);

  const client = await NbdClient.connect({ path: socket, exportName: 'vda' });
  const exported = await client.read(0, client.size);
  await client.close();

  const out = join(work, 'restored');
  await mkdir(out);
  const restored = await restore(await BackupSet.open(dest), { to: out, at: points[0]!, disk: 'vda', format: 'raw' });
  const expected = await readFile(restored.disks[0]!.path);
  t.is(exported.length, expected.length);
  t.true(exported.equals(expected), 'the export holds the bytes restore writes');

  exporting.child.kill('SIGINT');
  const ended = await exporting.done;
  t.is(ended.code, 0, ended.stderr);
  t.is(jsonLines(ended.stdout).at(-1)!['type'], 'result');
  await t.throwsAsync(stat(socket), { code: 'ENOENT' }, 'the socket is gone');
});

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolveListen) => server.listen(0, '127.0.0.1', resolveListen));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolveClose) => server.close(resolveClose));
  return port;
}

test('export over TCP with TLS: a client holding a certificate of the CA reads the point; a client without TLS is refused', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const { dest, points } = await backedUpDomain(t, conn, 'cli-export-tls');
  const work = await scratch(t, 'cli-export-tls');
  const ca = await makeCa(work, 'ca');
  const server = await makeSignedCert(work, 'server', ca, 'tls_www_server');
  const client = await makeSignedCert(work, 'client', ca, 'tls_www_client');
  const tlsDir = join(work, 'tls');
  await mkdir(tlsDir);
  await copyFile(ca.cert, join(tlsDir, 'ca-cert.pem'));
  await copyFile(server.cert, join(tlsDir, 'server-cert.pem'));
  await copyFile(server.key, join(tlsDir, 'server-key.pem'));
  const port = await freePort();

  const exporting = startCli(['export', dest, '--disk', 'vda', '--tcp', `127.0.0.1:${port}`, '--tls-dir', tlsDir, '--json']);
  t.teardown(() => void exporting.child.kill('SIGKILL'));
  const ready = JSON.parse(await exporting.waitForLine((line) => line.includes('"export-ready"'))) as Record<string, unknown>;
  t.is(ready['uri'], `nbds://127.0.0.1:${port}/vda`);
  await t.throwsAsync(NbdClient.connect({ host: '127.0.0.1', port, exportName: 'vda' }), { instanceOf: NbdOptionError }, 'TLS is required');
  const nbd = await NbdClient.connect({
    host: '127.0.0.1',
    port,
    exportName: 'vda',
    tls: { ca: await readFile(ca.cert), cert: await readFile(client.cert), key: await readFile(client.key) },
  });
  const exported = await nbd.read(0, nbd.size);
  await nbd.close();

  const out = join(work, 'restored');
  await mkdir(out);
  const restored = await restore(await BackupSet.open(dest), { to: out, at: points.at(-1)!, disk: 'vda', format: 'raw' });
  t.true(exported.equals(await readFile(restored.disks[0]!.path)), 'the export over TLS holds the bytes restore writes');
  exporting.child.kill('SIGINT');
  t.is((await exporting.done).code, 0);
});
