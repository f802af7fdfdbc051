import test from 'ava';
import { UsageError, parseCommandLine } from '../../src/cli/args.js';
import { runCli } from './helpers.js';

test('usage errors exit 2 with a one-line message naming the culprit', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [[], /a command is required/],
    [['frobnicate', 'x'], /unknown command 'frobnicate' \(commands: backup, restore, verify, list, prune, run, migrate-storage, export\)/],
    [['list', '/tmp', '--colour'], /unknown option '--colour'.*list --help/],
    [['restore', '/tmp'], /option '--to' or '--pool' is required/],
    [['restore', '/tmp', '--to', 'out', '--pool', 'default'], /options '--to' and '--pool' exclude each other/],
    [['restore', '/tmp', '--to', 'out', '--define', 'copy'], /option '--define' goes with '--pool'/],
    [['restore', '/tmp', '--to', 'out', '--username', 'backup'], /option '--username' goes with '--pool'/],
    [['restore', '/tmp', '--pool', 'default', '--connect-timeout', '0'], /--connect-timeout must be a whole number of at least 1, got 0/],
    [['restore', '/tmp', '--pool', 'default', '--overwrite'], /'--overwrite' does not apply to '--pool': existing volumes are never overwritten/],
    [['restore', '/tmp', '--pool', 'default', '--define', 'copy', '--disk', 'vda'], /'--define' needs every disk/],
    [['restore', '/tmp', '--to'], /option '--to' needs a value/],
    [['restore', '/tmp', '--to', 'out', '--format', 'vmdk'], /option '--format' must be one of qcow2, raw, got 'vmdk'/],
    [['prune', '/tmp', '--keep', '0'], /--keep must be a whole number of at least 1, got 0 /],
    [['prune', '/tmp'], /option '--keep' is required/],
    [['verify'], /DIR is required/],
    [['verify', 'a', 'b'], /unexpected argument 'b'/],
    [['backup', 'vm1', '--dest', '/tmp/x', '--level', 'weekly'], /option '--level' must be one of auto, full, inc, diff/],
    [['backup', 'vm1'], /option '--dest' is required/],
    [['backup', 'vm1', '--dest', '/tmp/x', '--compress', 'lz4'], /option '--compress' must be one of zstd, zlib, got 'lz4'/],
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
    all: undefined,
    dest: 'd',
    level: 'inc',
    transport: 'pull',
    disks: ['vda', 'vdb', 'vdc'],
    scratchDir: undefined,
    compress: undefined,
    dryRun: false,
    startPaused: false,
    quiesce: undefined,
    freezeMountpoints: [],
    uri: 'qemu:///system',
    username: undefined,
    passwordFile: undefined,
    connectTimeoutMs: undefined,
    nbdHost: undefined,
    nbdPorts: undefined,
    nbdTls: true,
    tlsDir: undefined,
    destShared: false,
    json: true,
  });
  t.deepEqual(parseCommandLine(['restore', 'set', '--to=out.raw', '--at', '0003', '--disk', 'vda', '--format', 'raw']), {
    command: 'restore',
    dir: 'set',
    to: 'out.raw',
    pool: undefined,
    define: undefined,
    uri: 'qemu:///system',
    username: undefined,
    passwordFile: undefined,
    connectTimeoutMs: undefined,
    at: '0003',
    disk: 'vda',
    format: 'raw',
    overwrite: false,
    verify: true,
    json: false,
  });
  t.like(parseCommandLine(['restore', 'set', '--to', 'out', '--no-verify']), { command: 'restore', verify: false });
  t.like(parseCommandLine(['restore', 'set', '--pool', 'default', '--connect', 'qemu+tls://host/system', '--define', 'copy']), {
    command: 'restore',
    to: undefined,
    pool: 'default',
    define: 'copy',
    uri: 'qemu+tls://host/system',
  });
  t.deepEqual(parseCommandLine(['prune', 'set', '--keep', '3', '--connect', 'test:///default']), {
    command: 'prune',
    dir: 'set',
    keep: 3,
    uri: 'test:///default',
    username: undefined,
    passwordFile: undefined,
    connectTimeoutMs: undefined,
    json: false,
  });
  t.deepEqual(parseCommandLine(['verify', 'set', '--help']), { command: 'help', topic: 'verify' });
  for (const bad of [
    ['prune', 's', '--keep', '1.5'],
    ['prune', 's', '--keep', '-1'],
    ['backup', 'vm', '--dest', 'd', '--disk', 'vda,vda'],
    ['list', 's', '--json=yes'],
  ]) {
    t.throws(() => parseCommandLine(bad), { instanceOf: UsageError }, bad.join(' '));
  }
});

test('--compress takes zstd or zlib', (t) => {
  for (const compress of ['zstd', 'zlib'] as const) {
    const parsed = parseCommandLine(['backup', 'vm1', '--dest', 'd', '--compress', compress]);
    t.is(parsed.command === 'backup' ? parsed.compress : undefined, compress);
  }
});

test('a numeric option takes a negative number as its value, and refuses it with the rule', async (t) => {
  const cases: Array<[string[], string]> = [
    [['--keep', '-1'], 'got -1'],
    [['--keep=-1'], 'got -1'],
    [['--keep', '-0.5'], 'got -0.5'],
    [['--keep', '1.5'], 'got 1.5'],
    [['--keep', 'abc'], 'got abc'],
    [['--keep', '1 2'], "got '1 2'"],
    [['--keep='], 'got nothing'],
    [['--keep', '0'], 'got 0'],
  ];
  for (const [option, got] of cases) {
    const error = t.throws(() => parseCommandLine(['prune', 'set', ...option]), { instanceOf: UsageError }, option.join(' '));
    t.is(error?.message, `--keep must be a whole number of at least 1, ${got}`, option.join(' '));
  }
  t.regex(t.throws(() => parseCommandLine(['prune', 'set', '--keep', '99999999999999999999']))!.message, /at most 9007199254740991, got 99999999999999999999$/);
  t.is(t.throws(() => parseCommandLine(['prune', 'set', '--keep']))?.message, "option '--keep' needs a value");
  t.like(parseCommandLine(['prune', 'set', '--keep', '007']), { command: 'prune', dir: 'set', keep: 7, uri: 'qemu:///system', json: false });
  // A negative number is a value only for numeric options; elsewhere '-x' still reads as a missing value.
  t.regex(
    t.throws(() => parseCommandLine(['backup', 'vm', '--dest', '-1']))!.message,
    /option '--dest' needs a value; a value that starts with '-' is written --dest=-VALUE/,
  );

  const run = await runCli(['prune', '/tmp', '--keep', '-1']);
  t.is(run.code, 2);
  t.is(run.stderr, "libvirt-backup: --keep must be a whole number of at least 1, got -1 (see 'libvirt-backup prune --help')\n");
});

test('a mistyped command or option gets a suggestion', async (t) => {
  const cases: Array<[string[], string]> = [
    [['bakup'], "unknown command 'bakup'; did you mean 'backup'?"],
    [['verfiy', 'set'], "unknown command 'verfiy'; did you mean 'verify'?"],
    [['help', 'prnue'], "unknown command 'prnue'; did you mean 'prune'?"],
    [['--verison'], "unknown option '--verison'; did you mean '--version'?"],
    [['list', 'set', '--jsn'], "unknown option '--jsn'; did you mean '--json'?"],
    [['backup', 'vm', '--dset', 'd'], "unknown option '--dset'; did you mean '--dest'?"],
    [['backup', 'vm', '--dest', 'd', '--uri', 'test:///default'], "unknown option '--uri'; did you mean '--connect'?"],
    [['list', 'set', '--keep', '3'], "unknown option '--keep': list does not take it (prune does)"],
    [['list', 'set', '--colour'], "unknown option '--colour'"],
  ];
  for (const [args, message] of cases) t.is(t.throws(() => parseCommandLine(args), { instanceOf: UsageError })?.message, message, args.join(' '));
  t.regex(t.throws(() => parseCommandLine(['restore-it']))!.message, /^unknown command 'restore-it' \(commands: /, 'nothing close: the list instead');

  const run = await runCli(['bakup', 'vm1', '--dest', '/tmp/x']);
  t.is(run.code, 2);
  t.is(run.stdout, '');
  t.is(run.stderr, "libvirt-backup: unknown command 'bakup'; did you mean 'backup'? (see 'libvirt-backup --help')\n");
});
