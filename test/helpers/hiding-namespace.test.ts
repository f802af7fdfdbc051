// The namespace that stands for another host must not keep the host's mounts under the
// paths it hides: a test that unmounts its own file system there (to check and mount it
// again) must get it back, not the copy such a namespace still holds.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import test from 'ava';

import { runHidden } from './hiding-namespace.js';
import { run, tryRun } from './process.js';

test('a file system mounted under a hidden path is not held by the hiding namespace', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'lvb-hidden-mount-'));
  const mountPoint = join(dir, 'mounted');
  await run('mkdir', [mountPoint]);
  await run('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'lvb-test-held', mountPoint]);
  t.teardown(async () => {
    await tryRun('umount', [mountPoint]);
    await rm(dir, { recursive: true, force: true });
  });
  const hidden = await runHidden(['cat', '/proc/self/mountinfo']);
  t.is(hidden.code, 0, hidden.stderr);
  t.false(hidden.stdout.includes(mountPoint), `the namespace still has ${mountPoint}:\n${hidden.stdout}`);
  t.regex(hidden.stdout, / \/tmp .* - tmpfs lvb-hidden /, 'the hidden /tmp is the empty tmpfs');
});
