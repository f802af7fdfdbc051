// `backup --all`: the command line that chooses many domains, checked before anything connects.
import test from 'ava';

import { parseCommandLine, UsageError, type BackupArgs } from '../../src/cli/args.js';
import { namePattern } from '../../src/cli/name-pattern.js';
import { inBoundedLanes } from '../../src/common/bounded-lanes.js';

function parse(...args: string[]): BackupArgs {
  return parseCommandLine(['backup', ...args]) as BackupArgs;
}

test('--all: several --connect in order, --match patterns, --parallel; the default URI when none is given', (t) => {
  t.like(parse('--all', '--dest', '/srv/backups'), { domain: '', all: { uris: ['qemu:///system'], match: [], parallel: 1 }, dest: '/srv/backups' });
  t.like(
    parse(
      '--all',
      '--dest',
      '/srv/b',
      '--connect',
      'qemu+tls://hv1/system',
      '--connect',
      'qemu+ssh://hv2/system',
      '--match',
      'web-*',
      '--match',
      'db?',
      '--parallel',
      '3',
    ),
    { all: { uris: ['qemu+tls://hv1/system', 'qemu+ssh://hv2/system'], match: ['web-*', 'db?'], parallel: 3 }, uri: 'qemu+tls://hv1/system' },
  );
  t.is(parse('vm', '--dest', '/srv/set').all, undefined);
});

test('--all refuses what would be ambiguous, naming the option', (t) => {
  const refused = (args: string[], message: RegExp) => {
    const error = t.throws(() => parse(...args));
    t.true(error instanceof UsageError);
    t.regex(error!.message, message);
  };
  refused(['vm', '--all', '--dest', '/d'], /'--all' backs up every running domain: give no DOMAIN \(got 'vm'\)/);
  refused(['--all', '--dest', '/d', '--disk', 'vda'], /'--disk' chooses disks of one domain/);
  refused(['--all', '--dest', '/d', '--connect', 'a', '--connect', 'b', '--nbd-host', '10.0.0.1'], /'--nbd-host' names one hypervisor's address/);
  refused(['vm', '--dest', '/d', '--match', 'x*'], /option '--match' goes with '--all'/);
  refused(['vm', '--dest', '/d', '--parallel', '2'], /option '--parallel' goes with '--all'/);
  refused(['vm', '--dest', '/d', '--connect', 'a', '--connect', 'b'], /several '--connect' go with '--all'/);
  refused(['--all', '--dest', '/d', '--parallel', '0'], /--parallel must be a whole number of at least 1, got 0/);
  refused(['--all', '--dest', '/d', '--match', ''], /'--match' needs a pattern/);
  refused(['--all'], /option '--dest' is required/);
});

test('name patterns match whole names, shell-style, and treat everything else literally', (t) => {
  const matches = (glob: string, name: string) => namePattern(glob).test(name);
  t.true(matches('web-*', 'web-01'));
  t.false(matches('web-*', 'my-web-01'));
  t.true(matches('db?', 'db1'));
  t.false(matches('db?', 'db12'));
  t.true(matches('vm[0-2]', 'vm1'));
  t.false(matches('vm[!0-2]', 'vm1'));
  t.true(matches('vm[!0-2]', 'vm7'));
  t.true(matches('a.b+(c)', 'a.b+(c)'));
  t.false(matches('a.b', 'axb'));
  t.true(matches('[x', '[x'));
  t.true(matches('*', 'anything at all'));
});

test('bounded lanes: never more at once than asked, results in the order of the list', async (t) => {
  let running = 0;
  let most = 0;
  const results = await inBoundedLanes([5, 1, 4, 2, 3], 2, async (n) => {
    running += 1;
    most = Math.max(most, running);
    await new Promise((resolve) => setTimeout(resolve, n * 5));
    running -= 1;
    return n * 10;
  });
  t.deepEqual(results, [50, 10, 40, 20, 30]);
  t.is(most, 2);
  t.deepEqual(await inBoundedLanes([], 4, async (n: number) => n), []);
});
