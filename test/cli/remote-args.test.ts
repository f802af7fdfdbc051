// The command line of remote backups: connection and NBD options parsed and checked
// before anything connects.
import test from 'ava';

import { parseCommandLine, UsageError, type BackupArgs } from '../../src/cli/args.js';
import { runCli } from './helpers.js';

function backup(...args: string[]): BackupArgs {
  return parseCommandLine(['backup', 'vm', '--dest', '/srv/set', ...args]) as BackupArgs;
}

test('remote options: defaults, and each one read', (t) => {
  t.like(backup(), { uri: 'qemu:///system', nbdHost: undefined, nbdPorts: undefined, nbdTls: true, tlsDir: undefined, destShared: false });
  t.like(
    backup(
      '--connect',
      'qemu+tls://hv1/system',
      '--username',
      'backup',
      '--password-file',
      '/etc/secret',
      '--connect-timeout',
      '5',
      '--nbd-host',
      '10.0.0.5',
      '--nbd-ports',
      '20000-20010',
      '--nbd-tls',
      'no',
      '--tls-dir',
      '/etc/pki/backup',
      '--dest-shared',
    ),
    {
      uri: 'qemu+tls://hv1/system',
      username: 'backup',
      passwordFile: '/etc/secret',
      connectTimeoutMs: 5000,
      nbdHost: '10.0.0.5',
      nbdPorts: { first: 20000, last: 20010 },
      nbdTls: false,
      tlsDir: '/etc/pki/backup',
      destShared: true,
    },
  );
  t.deepEqual(backup('--nbd-ports', '10809').nbdPorts, { first: 10809, last: 10809 });
});

test('bad remote options name the option and what is wrong', (t) => {
  for (const [args, message] of [
    [['--nbd-ports', '20010-20000'], /--nbd-ports must be a port or a range FIRST-LAST/],
    [['--nbd-ports', '0-10'], /--nbd-ports/],
    [['--nbd-ports', '70000'], /--nbd-ports/],
    [['--nbd-tls', 'maybe'], /option '--nbd-tls' must be one of yes, no/],
    [['--connect-timeout', '0'], /--connect-timeout must be a whole number of at least 1/],
    [['--password', 'x'], /unknown option '--password'; did you mean '--password-file'\?/],
  ] as const) {
    t.throws(() => backup(...args), { instanceOf: UsageError, message }, args.join(' '));
  }
});

test('an unreadable password file is bad input, said before connecting', async (t) => {
  const run = await runCli([
    'backup',
    'vm',
    '--dest',
    '/srv/none',
    '--connect',
    'qemu+tcp://127.0.0.1/system',
    '--password-file',
    '/nonexistent/password',
    '--json',
  ]);
  t.is(run.code, 2, run.stderr);
  t.regex(run.stderr, /cannot read the password file \/nonexistent\/password/);
});

test('run and migrate-storage take the connection options of the other commands', (t) => {
  for (const argv of [
    ['run', '/srv/set', '--name', 'vm2'],
    ['migrate-storage', 'vm2', '--to', '/var/lib/libvirt/images'],
  ]) {
    t.like(
      parseCommandLine([...argv, '--connect', 'qemu+tcp://hv1/system', '--username', 'backup', '--password-file', '/etc/secret', '--connect-timeout', '7']),
      {
        uri: 'qemu+tcp://hv1/system',
        username: 'backup',
        passwordFile: '/etc/secret',
        connectTimeoutMs: 7000,
      },
    );
    const error = t.throws(() => parseCommandLine([...argv, '--connect-timeout', '0']));
    t.true(error instanceof UsageError);
    t.regex(error!.message, /--connect-timeout must be a whole number of at least 1, got 0/);
  }
});
