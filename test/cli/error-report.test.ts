import test from 'ava';
import { mkdtemp, rm, stat, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BackupSetError } from '../../src/backup/errors.js';
import { CliError, reportFor } from '../../src/cli/error-report.js';
import { LibvirtError } from '../../src/libvirt/errors.js';
import { buildSet } from '../backup/helpers.js';
import { jsonLines, runCli } from './helpers.js';

function systemError(code: string, syscall: string, path: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: some words from libuv, ${syscall} '${path}'`), { code, syscall, path, errno: -1 });
}

function libvirtError(codeName: 'VIR_ERR_INTERNAL_ERROR' | 'VIR_ERR_NO_CONNECT' | 'VIR_ERR_OPERATION_TIMEOUT', message: string): LibvirtError {
  const code = { VIR_ERR_INTERNAL_ERROR: 1, VIR_ERR_NO_CONNECT: 5, VIR_ERR_OPERATION_TIMEOUT: 68 }[codeName];
  return new LibvirtError({ code, domain: 10, level: 2, message, str1: null, str2: null, str3: null, int1: -1, int2: -1 });
}

test('too long a path and a symlink loop are bad input (exit 2), in plain words', (t) => {
  const long = `/tmp/${'a'.repeat(300)}`;
  for (const [code, words] of [
    ['ENAMETOOLONG', 'file name too long'],
    ['ELOOP', 'too many levels of symbolic links'],
  ] as const) {
    const raw = reportFor(systemError(code, 'stat', long));
    t.deepEqual(raw, { exitCode: 2, code, message: `${long}: ${words}` });
    const wrapped = reportFor(new BackupSetError('SET_IO', `cannot access backup set directory ${long}: ${words}`, { cause: systemError(code, 'stat', long) }));
    t.is(wrapped.exitCode, 2, code);
  }
  // A full disk is a failure, not bad input.
  t.is(reportFor(systemError('ENOSPC', 'write', '/x')).exitCode, 1);
});

test('an errno name from a far end (an NBD server) is never taken for a bad path', (t) => {
  const nbd = Object.assign(new Error('NBD_CMD_READ failed: ENOENT at offset 0'), { code: 'ENOENT' });
  t.deepEqual(reportFor(nbd), { exitCode: 1, code: 'ENOENT', message: 'NBD_CMD_READ failed: ENOENT at offset 0' });
});

test('a libvirt error names what failed, on one line; the whole text goes to detail', (t) => {
  const dump = 'internal error: process exited while connecting to monitor: qemu-system-x86_64: -blockdev x: Could not open\nline two\nline three';
  const report = reportFor(libvirtError('VIR_ERR_INTERNAL_ERROR', dump), "backup of domain 'vm1'");
  t.is(report.exitCode, 1);
  t.is(report.code, 'VIR_ERR_INTERNAL_ERROR');
  t.is(
    report.message,
    "backup of domain 'vm1' failed in libvirt: internal error: process exited while connecting to monitor: qemu-system-x86_64: -blockdev x: Could not open (2 more lines in --json output)",
  );
  t.is(report.detail, `backup of domain 'vm1' failed in libvirt: ${dump}`);
  t.is(reportFor(libvirtError('VIR_ERR_NO_CONNECT', 'no connection driver available for foo:///bar')).exitCode, 2, 'a URI no driver accepts is bad input');
  t.deepEqual(reportFor(new CliError('UNSUPPORTED', 2, 'test:///default cannot take backups')), {
    exitCode: 2,
    code: 'UNSUPPORTED',
    message: 'test:///default cannot take backups',
  });
});

test('the command: too long a set path and a symlink loop exit 2 with the reason', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'lvb-paths-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const loop = join(dir, 'loop');
  await symlink(loop, loop);
  const long = join(dir, 'a'.repeat(300));
  const builder = await buildSet(t, ['full']);
  for (const [args, reason] of [
    [['list', long], 'file name too long'],
    [['verify', long], 'file name too long'],
    [['list', loop], 'too many levels of symbolic links'],
    [['restore', builder.dir, '--to', long], `${long}: file name too long`],
  ] as const) {
    const run = await runCli(args);
    t.is(run.code, 2, `${args[0]} ${run.stderr}`);
    t.regex(run.stderr, /^libvirt-backup: [^\n]+\n$/);
    t.true(run.stderr.includes(reason), run.stderr);
    t.notRegex(run.stderr, /ENAMETOOLONG|ELOOP/, 'no raw errno text');
  }
});

test('the command: a URI whose driver cannot take backups is UNSUPPORTED; a failed connection names the URI', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'lvb-uri-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const dest = join(dir, 'set');
  // `test` is a domain the test driver has, so only the driver can be the reason.
  const unsupported = await runCli(['backup', 'test', '--dest', dest, '--connect', 'test:///default', '--json']);
  t.is(unsupported.code, 2, unsupported.stderr);
  t.like(jsonLines(unsupported.stdout).at(-1), { type: 'error', code: 'UNSUPPORTED', exitCode: 2 });
  t.regex(unsupported.stderr, /^libvirt-backup: test:\/\/\/default cannot take backups: libvirt's test driver implements checkpoints but not backups\n$/);
  await t.throwsAsync(() => stat(dest), { code: 'ENOENT' }, 'the set directory is not created');

  const noDriver = await runCli(['backup', 'vm1', '--dest', dest, '--connect', 'lvb-nonsense:///x', '--json']);
  t.is(noDriver.code, 2);
  t.like(jsonLines(noDriver.stdout).at(-1), { type: 'error', code: 'VIR_ERR_NO_CONNECT' });
  t.regex(noDriver.stderr, /^libvirt-backup: cannot connect to lvb-nonsense:\/\/\/x: no libvirt driver on this host accepts that URI/);

  const uri = `qemu+unix:///system?socket=${join(dir, 'no-daemon.sock')}`;
  const down = await runCli(['backup', 'vm1', '--dest', dest, '--connect', uri]);
  t.is(down.code, 1);
  t.true(down.stderr.startsWith(`libvirt-backup: cannot connect to ${uri}: `), down.stderr);
  t.regex(down.stderr, /^[^\n]+\n$/);
});

test("a domain held by libvirt's thread for QEMU's events says QEMU is not answering and what may be frozen with it", (t) => {
  const held = libvirtError(
    'VIR_ERR_OPERATION_TIMEOUT',
    'Timed out during operation: cannot acquire state change lock (held by monitor=qemu-event) (virDomainGetJobInfo)',
  );
  const report = reportFor(held, "backup of domain 'vm1'");
  t.is(report.code, 'VIR_ERR_OPERATION_TIMEOUT');
  t.is(report.exitCode, 1);
  t.regex(report.message, /^backup of domain 'vm1' failed in libvirt: Timed out during operation: cannot acquire state change lock/);
  t.regex(report.message, /QEMU has not answered libvirt .*the guest may be frozen.*virsh destroy/);
  // Held by an API call of another client: an ordinary wait, no hint.
  const busy = libvirtError(
    'VIR_ERR_OPERATION_TIMEOUT',
    'Timed out during operation: cannot acquire state change lock (held by agent=remoteDispatchDomainFSFreeze)',
  );
  t.false(/QEMU has not answered/.test(reportFor(busy).message));
});
