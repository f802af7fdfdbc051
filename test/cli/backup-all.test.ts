// `backup --all`: three domains of one host, two at a time, each into ROOT/<host>/<domain>;
// one of them stops halfway through its backup, and the others must not notice.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import test from 'ava';

import { BackupSet } from '../../src/backup/index.js';
import { mirroredDomain } from '../backup/engine-helpers.js';
import { connectSystem } from '../helpers/daemon.js';
import { jsonLines, runCli, startCli } from './helpers.js';

interface Outcome {
  host: string;
  domain: string;
  dest: string;
  status: string;
  result?: { backupId: string; level: string };
  error?: { code: string; exitCode: number };
}

test('backup --all --parallel 2: a domain that stops halfway fails alone, its set unchanged; exit code and summary say so', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const [a, b, c] = await Promise.all([
    mirroredDomain(t, conn, 'all-a', [{ sizeMiB: 16 }]),
    mirroredDomain(t, conn, 'all-b', [{ sizeMiB: 512 }]),
    mirroredDomain(t, conn, 'all-c', [{ sizeMiB: 16 }]),
  ]);
  const root = await mkdtemp(join(tmpdir(), 'lvb-all-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const host = await conn.getHostname();
  // Only this test's domains: other test files run their own at the same time.
  const match = `lvbt-all-?-${process.pid}-*`;
  await a.write(0, 0x31, '0', '1M');
  await b.write(0, 0x32, '0', '128M');
  await c.write(0, 0x33, '0', '1M');

  const first = await runCli(['backup', '--all', '--match', match, '--dest', root, '--parallel', '2']);
  t.is(first.code, 0, first.stderr);
  t.regex(first.stdout, /^backed up 3 of 3 domains into /);
  for (const m of [a, b, c]) {
    t.regex(first.stdout, new RegExp(`\\n  ${host.replace(/[.]/g, '\\.')}\\s+${m.vm.name}\\s+ok\\s+0001 full\\s`));
    t.is((await BackupSet.open(join(root, host, m.vm.name))).backups.length, 1);
  }

  await a.write(0, 0x41, '2M', '1M');
  await b.write(0, 0x42, '0', '384M');
  await c.write(0, 0x43, '2M', '1M');
  const manifestOfB = await readFile(join(root, host, b.vm.name, 'manifest.json'));
  // Destroyed once its data is moving: halfway through its backup.
  const second = startCli(['backup', '--all', '--match', match, '--dest', root, '--parallel', '2', '--json']);
  await second.waitForLine((line) => {
    const event = JSON.parse(line) as { type?: string; domain?: string };
    return event.type === 'progress' && event.domain === b.vm.name;
  });
  await b.vm.domain.destroy();
  const run = await second.done;
  t.is(run.code, 1, run.stderr);
  const lines = jsonLines(run.stdout);
  const result = lines.at(-1) as { type: string; domains: Outcome[]; succeeded: number; failed: number };
  t.is(result.type, 'result');
  t.like(result, { succeeded: 2, failed: 1 });
  const byName = new Map(result.domains.map((outcome) => [outcome.domain, outcome]));
  for (const m of [a, c]) {
    t.like(byName.get(m.vm.name), { host, status: 'ok', dest: join(root, host, m.vm.name), result: { backupId: '0002', level: 'inc' } });
    t.is((await BackupSet.open(join(root, host, m.vm.name))).backups.length, 2);
  }
  const failed = byName.get(b.vm.name)!;
  t.is(failed.status, 'failed');
  t.is(failed.error?.code, 'DOMAIN_STOPPED', JSON.stringify(failed));
  t.deepEqual(await readFile(join(root, host, b.vm.name, 'manifest.json')), manifestOfB, "the failed domain's set is unchanged");
  t.true(
    lines.some((line) => line['type'] === 'progress' && line['domain'] === a.vm.name && String(line['target']) === `${a.vm.name}:vda`),
    'progress says whose disk it is',
  );
  const verify = await runCli(['verify', join(root, host, b.vm.name)]);
  t.is(verify.code, 0, verify.stdout + verify.stderr);
});

test('backup --all with no domain that matches, or a host that cannot be reached, says so', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'lvb-all-none-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const none = await runCli(['backup', '--all', '--match', `no-such-domain-${process.pid}-*`, '--dest', root]);
  t.is(none.code, 2, none.stderr);
  t.regex(none.stderr, /no running domain matching 'no-such-domain-\d+-\*' on qemu:\/\/\/system/);
  const unreachable = await runCli([
    'backup',
    '--all',
    '--match',
    `no-such-domain-${process.pid}-*`,
    '--connect',
    'qemu+tcp://127.0.0.1:1/system',
    '--connect-timeout',
    '5',
    '--dest',
    root,
  ]);
  t.is(unreachable.code, 1, unreachable.stderr);
  t.regex(unreachable.stdout, /backed up 0 of 1 domain .*; 1 FAILED/);
  t.regex(unreachable.stdout, /qemu\+tcp:\/\/127\.0\.0\.1:1\/system\s+\(host\)\s+FAILED .*cannot connect to qemu\+tcp:\/\/127\.0\.0\.1:1\/system/);
});
