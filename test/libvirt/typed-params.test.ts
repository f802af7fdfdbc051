import test from 'ava';

import { TypedParameterType } from '../../src/index.js';
import { nativeAddon } from '../../src/libvirt/native.js';

const addon = nativeAddon();

test('typed parameters survive JS -> libvirt -> JS for every type', (t) => {
  const out = addon.typedParamsRoundTrip({
    int: { type: TypedParameterType.INT, value: -5 },
    uint: { type: TypedParameterType.UINT, value: 4_000_000_000 },
    llong: { type: TypedParameterType.LLONG, value: -(2 ** 40) },
    ullong: { type: TypedParameterType.ULLONG, value: 2 ** 52 },
    huge: 2n ** 63n + 5n,
    double: 1.5,
    flag: true,
    text: 'vda & <é>',
  });
  t.deepEqual(out, {
    int: -5,
    uint: 4_000_000_000,
    llong: -(2 ** 40),
    ullong: 2 ** 52,
    // Beyond 2^53 a number would lose digits: such values come back as BigInt.
    huge: 2n ** 63n + 5n,
    double: 1.5,
    flag: true,
    text: 'vda & <é>',
  });
});

test('bad typed parameters are TypeErrors naming the field', (t) => {
  t.throws(() => addon.typedParamsRoundTrip({ x: { type: TypedParameterType.INT, value: 2 ** 40 } }), {
    instanceOf: TypeError,
    message: /"x" must be an integer in range/,
  });
  t.throws(() => addon.typedParamsRoundTrip({ y: { type: TypedParameterType.BOOLEAN, value: 1 } }), {
    instanceOf: TypeError,
    message: /"y" must be a boolean/,
  });
  t.throws(() => addon.typedParamsRoundTrip({ z: {} as unknown as number }), { instanceOf: TypeError, message: /"z"/ });
  t.throws(() => addon.typedParamsRoundTrip({ ['f'.repeat(80)]: 1 }), { instanceOf: TypeError, message: /longer than libvirt allows/ });
});
