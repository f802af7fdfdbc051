// src/libvirt/native.ts declares the addon's surface; this checks the declarations
// against what the addon built here really exports.
import test from 'ava';

import { nativeAddon, NATIVE_SURFACE, type NativeClassName } from '../../src/libvirt/native.js';

const sorted = (names: Iterable<string>) => [...names].sort();

test('the addon exports exactly what src/libvirt/native.ts declares', (t) => {
  const addon = nativeAddon() as unknown as Record<string, unknown>;
  t.deepEqual(sorted(Object.keys(addon)), sorted(Object.keys(NATIVE_SURFACE.exports)));
});

test('each native class has exactly the methods src/libvirt/native.ts declares', (t) => {
  const addon = nativeAddon() as unknown as Record<string, { prototype: object }>;
  const classes = Object.keys(NATIVE_SURFACE).filter((name): name is NativeClassName => name !== 'exports');
  t.deepEqual(sorted(classes), sorted(Object.keys(NATIVE_SURFACE.exports).filter((name) => /^[A-Z]/.test(name))));
  for (const name of classes) {
    const prototype = addon[name]!.prototype;
    const methods = Object.getOwnPropertyNames(prototype).filter((method) => method !== 'constructor');
    t.deepEqual(sorted(methods), sorted(Object.keys(NATIVE_SURFACE[name])), name);
    for (const method of methods) {
      t.is(typeof (prototype as Record<string, unknown>)[method], 'function', `${name}.${method}`);
    }
  }
});
