import test from 'ava';
import { UsageError, parseCommandLine } from '../../src/cli/args.js';
import { runCli } from './helpers.js';

test('usage errors exit 2 with a one-line message naming the culprit', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [[], /a command is required/],
    [['frobnicate', 'x'], /unknown command 'frobnicate'/],
    [['list', '/tmp', '--colour'], /unknown option '--colour'.*list --help/],
    [['restore', '/tmp'], /option '--to' is required/],
    [['restore', '/tmp', '--to'], /option '--to' needs a value/],
    [['restore', '/tmp', '--to', 'out', '--format', 'vmdk'], /option '--format' must be one of qcow2, raw, got 'vmdk'/],
    [['prune', '/tmp', '--keep', '0'], /option '--keep' must be a whole number of at least 1.*got '0'/],
    [['prune', '/tmp'], /option '--keep' is required/],
    [['verify'], /DIR is required/],
    [['verify', 'a', 'b'], /unexpected argument 'b'/],
    [['backup', 'vm1', '--dest', '/tmp/x', '--level', 'weekly'], /option '--level' must be one of auto, full, inc, diff/],
    [['backup', 'vm1'], /option '--dest' is required/],
  ];
  await Promise.all(
    cases.map(async ([args, message]) => {
      const run = await runCli(args);
      t.is(run.code, 2, args.join(' '));
      t.is(run.stdout, '', args.join(' '));
      t.regex(run.stderr, /^libvirt-backup: [^\n]+\n$/, args.join(' '));
      t.regex(run.stderr, message, args.join(' '));
    }),
  );
});

test('help and version', async (t) => {
  const overall = await runCli(['--help']);
  t.is(overall.code, 0);
  t.regex(overall.stdout, /^Usage: libvirt-backup COMMAND/);
  t.regex(overall.stdout, /130 +interrupted by SIGINT/);
  const restore = await runCli(['restore', '--help']);
  t.is(restore.code, 0);
  t.regex(restore.stdout, /^Usage: libvirt-backup restore DIR --to PATH/);
  t.regex(restore.stdout, /--format qcow2\|raw/);
  const viaHelp = await runCli(['help', 'prune']);
  t.regex(viaHelp.stdout, /^Usage: libvirt-backup prune DIR --keep N/);
  const version = await runCli(['--version']);
  t.regex(version.stdout, /^libvirt-backup \d+\.\d+\.\d+\n$/);
});

test('parsed options of each command', (t) => {
  t.deepEqual(parseCommandLine(['backup', 'vm1', '--dest', 'd', '--disk', 'vda,vdb', '--disk', 'vdc', '--level', 'inc', '--json']), {
    command: 'backup',
    domain: 'vm1',
    dest: 'd',
    level: 'inc',
    transport: 'pull',
    disks: ['vda', 'vdb', 'vdc'],
    uri: 'qemu:///system',
    json: true,
  });
  t.deepEqual(parseCommandLine(['restore', 'set', '--to=out.raw', '--at', '0003', '--disk', 'vda', '--format', 'raw']), {
    command: 'restore',
    dir: 'set',
    to: 'out.raw',
    at: '0003',
    disk: 'vda',
    format: 'raw',
    overwrite: false,
    json: false,
  });
  t.deepEqual(parseCommandLine(['prune', 'set', '--keep', '3', '--connect', 'test:///default']), { command: 'prune', dir: 'set', keep: 3, uri: 'test:///default', json: false });
  t.deepEqual(parseCommandLine(['verify', 'set', '--help']), { command: 'help', topic: 'verify' });
  for (const bad of [['prune', 's', '--keep', '1.5'], ['prune', 's', '--keep', '-1'], ['backup', 'vm', '--dest', 'd', '--disk', 'vda,vda'], ['list', 's', '--json=yes']]) {
    t.throws(() => parseCommandLine(bad), { instanceOf: UsageError }, bad.join(' '));
  }
});
