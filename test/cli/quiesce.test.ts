// `backup --quiesce`: the options as parsed, and the command against a domain without a
// guest agent (refused, creating nothing; or crash-consistent with --quiesce=try, which
// list then shows).
import { access } from 'node:fs/promises';
import { join } from 'node:path';

import test from 'ava';

import { parseCommandLine, UsageError, type BackupArgs } from '../../src/cli/args.js';
import { connectSystem, createThrowawayDomain } from '../helpers/daemon.js';
import { tempDir } from '../backup/helpers.js';
import { jsonLines, runCli } from './helpers.js';

function parse(...args: string[]): BackupArgs {
  return parseCommandLine(['backup', 'vm1', '--dest', '/b', ...args]) as BackupArgs;
}

test('--quiesce alone is yes; =try, =no; --freeze-mountpoint repeats and implies quiesce; bad values are usage errors', (t) => {
  t.like(parse(), { quiesce: undefined, freezeMountpoints: [] });
  t.like(parse('--quiesce'), { quiesce: 'yes', domain: 'vm1' });
  t.like(parse('--quiesce', '--json'), { quiesce: 'yes', json: true });
  t.like(parse('--quiesce=try'), { quiesce: 'try' });
  t.like(parse('--quiesce=no'), { quiesce: 'no' });
  t.like(parse('--freeze-mountpoint', '/', '--freeze-mountpoint', '/var'), { quiesce: undefined, freezeMountpoints: ['/', '/var'] });
  t.like(parse('--quiesce=try', '--freeze-mountpoint', '/'), { quiesce: 'try', freezeMountpoints: ['/'] });
  t.throws(() => parse('--quiesce=maybe'), { instanceOf: UsageError, message: "option '--quiesce' must be one of yes, try, no, got 'maybe'" });
  t.throws(() => parse('--freeze-mountpoint', 'var'), {
    instanceOf: UsageError,
    message: /'--freeze-mountpoint' takes a mount point in the guest, an absolute path; got 'var'/,
  });
  t.throws(() => parse('--quiesce=no', '--freeze-mountpoint', '/'), { instanceOf: UsageError, message: /does not go with '--quiesce=no'/ });
  // After --, an argument is never an option: a domain may be called --quiesce.
  t.like(parseCommandLine(['backup', '--dest', '/b', '--', '--quiesce']), { domain: '--quiesce', quiesce: undefined });
});

test('backup --quiesce of a domain without a guest agent exits 1 and creates nothing; --quiesce=try backs up with a notice, and list says not quiesced', async (t) => {
  const conn = await connectSystem();
  t.teardown(() => conn.close());
  const plain = await createThrowawayDomain(conn, 'cli-qz');
  t.teardown(() => plain.cleanup());
  const dest = join(await tempDir(t, 'cli-quiesce-'), 'set');

  const refused = await runCli(['backup', plain.name, '--dest', dest, '--quiesce']);
  t.is(refused.code, 1, refused.stderr);
  t.regex(refused.stderr, new RegExp(`cannot quiesce ${plain.name}: the guest agent of ${plain.name} does not answer .*; nothing was backed up`));
  await t.throwsAsync(access(dest), { code: 'ENOENT' });
  const json = await runCli(['backup', plain.name, '--dest', dest, '--freeze-mountpoint', '/', '--json']);
  t.is(json.code, 1);
  t.like(jsonLines(json.stdout).at(-1), { type: 'error', code: 'QUIESCE_FAILED' });

  const tried = await runCli(['backup', plain.name, '--dest', dest, '--quiesce=try', '--json']);
  t.is(tried.code, 0, tried.stderr);
  const events = jsonLines(tried.stdout);
  t.true(events.some((event) => event.type === 'notice' && /^not quiesced: .*; the backup is crash-consistent$/.test(String(event.message))));
  t.like(events.at(-1), { type: 'result', quiesced: false, freeze: null });

  const listed = await runCli(['list', dest]);
  t.regex(listed.stdout, /\nID\s+LEVEL\s+QUIESCED\s+/);
  t.regex(listed.stdout, /\n0001\s+full\s+no\s+-\s+/);
  const listedJson = JSON.parse((await runCli(['list', dest, '--json'])).stdout) as { backups: Array<{ quiesced: boolean | null }> };
  t.is(listedJson.backups[0]!.quiesced, false);
});
