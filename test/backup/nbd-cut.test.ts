// The NBD connection of a pull backup cut by something between libvirt's export and our
// client (a proxy that drops it half-way), and an export whose server is gone before the
// client connects: a failed job with a clear error, the set as it was, the guest's writes
// where the guest put them, and a next backup that works.
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

import test from 'ava';

import { BackupSet, restore } from '../../src/backup/index.js';
import { runBackup } from '../../src/backup/engine/engine.js';
import { TEST_NBD_PROXY_SOCKET_VARIABLE } from '../../src/backup/engine/export-connection.js';
import { reportFor } from '../../src/cli/error-report.js';
import { JobType } from '../../src/index.js';
import { connectSystem } from '../helpers/daemon.js';
import { cuttingProxy } from '../helpers/nbd-proxy.js';
import { jsonLines, runCli } from '../cli/helpers.js';
import { imagesIdentical, mirroredDomain } from './engine-helpers.js';

const MiB = 2 ** 20;

async function setState(dest: string): Promise<{ manifest: Buffer; entries: string[] }> {
  return { manifest: await readFile(join(dest, 'manifest.json')), entries: (await readdir(dest)).sort() };
}

// Serial: the proxy is named through the environment of this process.
test.serial('a proxy cutting the NBD connection mid-transfer: a clear error, the set unchanged, every guest write landed, the next backup works', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'nbd-cut', [{ sizeMiB: 64 }]);
  const dest = join(m.dir, 'set');
  await m.write(0, 0x31, '0', '48M');
  await runBackup({ domain: m.vm.name, dest, connection: conn });
  const before = await setState(dest);

  const proxy = await cuttingProxy(() => exportSocket(m), 8 * MiB);
  t.teardown(() => proxy.close());
  process.env[TEST_NBD_PROXY_SOCKET_VARIABLE] = proxy.socket;
  let error: Error | undefined;
  try {
    error = await t.throwsAsync(
      runBackup({
        domain: m.vm.name,
        dest,
        level: 'full',
        connection: conn,
        // The guest writes over data not copied yet while the job runs: copy-before-write.
        hooks: { afterJobStart: () => m.write(0, 0x32, '40M', '8M') },
      }),
    );
  } finally {
    delete process.env[TEST_NBD_PROXY_SOCKET_VARIABLE];
  }
  t.true(proxy.cutAfter >= 8 * MiB, `the proxy cut after ${proxy.cutAfter} bytes`);
  t.regex(error!.message, /NBD/, 'the error says the NBD transfer failed');
  t.regex(error!.message, /vda/, 'and of which disk');
  t.is(reportFor(error).exitCode, 1, `${(error as { code?: string }).code}: ${error!.message}`);
  t.deepEqual(await setState(dest), before, 'manifest.json byte for byte, and no file added or left');
  t.is((await m.vm.domain.getJobInfo()).type, JobType.NONE, 'the job was ended');

  await m.write(0, 0x33, '60M', '1M');
  t.true(await imagesIdentical(m.vm.disks[0]!.path, 'qcow2', await referenceNow(m), 'raw'), 'the disk holds every write the guest made');

  const next = await runBackup({ domain: m.vm.name, dest, connection: conn });
  const out = join(m.dir, 'out');
  await mkdir(out);
  const restored = await restore(await BackupSet.open(dest), { to: out, format: 'raw', at: next.backupId });
  t.true(await imagesIdentical(restored.disks[0]!.path, 'raw', await referenceNow(m), 'raw'), 'the next backup restores to the disk as it is');
});

test.serial('an export whose NBD server is gone before the client connects is a failed job (exit 1), not a bad path', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'nbd-gone', [{ sizeMiB: 16 }]);
  const dest = join(m.dir, 'set');
  await m.write(0, 0x34, '0', '1M');
  await runBackup({ domain: m.vm.name, dest, connection: conn });
  const before = await setState(dest);
  const gone = join(m.dir, 'no-server-here.sock');
  const result = await runCli(['backup', m.vm.name, '--dest', dest, '--json'], { [TEST_NBD_PROXY_SOCKET_VARIABLE]: gone });
  t.is(result.code, 1, result.stdout + result.stderr);
  const error = jsonLines(result.stdout).find((line) => line['type'] === 'error');
  t.is(error?.['code'], 'JOB_FAILED', JSON.stringify(error));
  t.regex(String(error?.['message']), /NBD export .* its NBD server is gone/);
  t.deepEqual(await setState(dest), before);
  t.is((await m.vm.domain.getJobInfo()).type, JobType.NONE);
});

// QEMU 7.2 as Debian ships it freezes, guest and all, when its NBD server stops while a
// client is still negotiating (README, "Known problems"). Once the copy runs, none of
// the command's connections may be: the proxy holds the greeting of every connection
// after the first for a second, and the server is stopped at the first progress event.
test.serial('the copy starts only once every NBD connection finished its handshake: the server stopped then leaves QEMU answering', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const m = await mirroredDomain(t, conn, 'nbd-stop', [{ sizeMiB: 64 }]);
  const dest = join(m.dir, 'set');
  await m.write(0, 0x35, '0', '48M');
  const proxy = await cuttingProxy(() => exportSocket(m), Infinity, { holdGreetingMs: (index) => (index === 0 ? 0 : 1000) });
  t.teardown(() => proxy.close());
  let stopped: Promise<string> | undefined;
  process.env[TEST_NBD_PROXY_SOCKET_VARIABLE] = proxy.socket;
  try {
    await runBackup({
      domain: m.vm.name,
      dest,
      level: 'full',
      connection: conn,
      onEvent: (event) => {
        if (event.type === 'progress' && stopped === undefined) {
          stopped = m.vm.domain.qemuMonitorCommand(JSON.stringify({ execute: 'nbd-server-stop' }));
        }
      },
    }).catch(() => undefined);
  } finally {
    delete process.env[TEST_NBD_PROXY_SOCKET_VARIABLE];
  }
  t.true(proxy.connections > 1, `the command used ${proxy.connections} connection(s): with one, nothing is tested here`);
  t.truthy(stopped, 'the copy reported progress');
  const answered = await Promise.race([stopped!.then(() => true), new Promise<false>((resolve) => setTimeout(() => resolve(false), 20_000).unref())]);
  t.true(answered, 'QEMU answered nbd-server-stop (it froze: a connection was still negotiating)');
  const status = await Promise.race([
    m.vm.domain.qemuMonitorCommand(JSON.stringify({ execute: 'query-status' })),
    new Promise<string>((resolve) => setTimeout(() => resolve('no answer'), 20_000).unref()),
  ]);
  t.regex(status, /"running":\s*true/, 'the guest runs on');
});

/** Where the domain's pull job serves its export. */
async function exportSocket(m: Awaited<ReturnType<typeof mirroredDomain>>): Promise<string> {
  const spec = await m.vm.domain.backupGetSpec();
  if (spec.mode !== 'pull' || spec.server?.transport !== 'unix') throw new Error('no pull job with a unix socket');
  return spec.server.socket;
}

/** The reference image as it is now, under a label of its own. */
async function referenceNow(m: Awaited<ReturnType<typeof mirroredDomain>>): Promise<string> {
  const label = `now-${Date.now()}`;
  await m.snapshot(label);
  return m.referenceAt(label, 0);
}
