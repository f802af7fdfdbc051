import { readFileSync } from 'node:fs';

import test from 'ava';

import { renderConstants } from '../../scripts/gen-constants.js';
import { CheckpointCreateFlags, ErrorCode, ListDomainsFlags, UndefineFlags } from '../../src/index.js';

test('src/libvirt/constants.ts matches the installed libvirt headers', (t) => {
  const committed = readFileSync(new URL('../../src/libvirt/constants.ts', import.meta.url), 'utf8');
  t.is(committed, renderConstants(), 'run `npm run gen:constants` and commit the result');
});

test("constants carry libvirt's values", (t) => {
  t.is(CheckpointCreateFlags.REDEFINE, 1);
  t.is(CheckpointCreateFlags.REDEFINE_VALIDATE, 4);
  t.is(ListDomainsFlags.HAS_CHECKPOINT, 1 << 14);
  t.is(UndefineFlags.CHECKPOINTS_METADATA, 1 << 4);
  t.is(ErrorCode.VIR_ERR_NO_DOMAIN_CHECKPOINT, 103);
  t.is(ErrorCode[42], 'VIR_ERR_NO_DOMAIN');
});
