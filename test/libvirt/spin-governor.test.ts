// How long a waiting thread of the call dispatcher polls before it sleeps
// (binding/spin_governor.h), without threads or timing.
import test from 'ava';

import { nativeAddon, type NativeSpinGovernorProbe } from '../../src/libvirt/native.js';

const SETTING = 200; // busyPollMicroseconds
const MIN_WINDOW = 10; // kMinWindowMicros
const RETRY_AFTER = 64; // kRetryAfter
const COOLDOWN = 256; // kCooldown

function governor(): NativeSpinGovernorProbe {
  return new (nativeAddon().SpinGovernorProbe)();
}

test('polls that find their work keep the full window', (t) => {
  const probe = governor();
  for (let i = 0; i < 10; i++) {
    t.is(probe.window(SETTING), SETTING);
    probe.found();
  }
});

test('a poll that runs out halves the window, and one that finds its work restores it', (t) => {
  const probe = governor();
  t.is(probe.window(SETTING), SETTING);
  probe.ranOut();
  t.is(probe.window(SETTING), SETTING / 2);
  probe.ranOut();
  t.is(probe.window(SETTING), SETTING / 4);
  probe.found();
  t.is(probe.window(SETTING), SETTING);
});

test('once polls keep running out, waits sleep at once, with a full try now and then', (t) => {
  const probe = governor();
  let window = probe.window(SETTING);
  while (window >= MIN_WINDOW) {
    probe.ranOut();
    window = probe.window(SETTING);
  }
  t.is(window, 0);
  const windows = Array.from({ length: 3 * RETRY_AFTER }, () => {
    const w = probe.window(SETTING);
    if (w > 0) probe.ranOut();
    return w;
  });
  t.is(windows.filter((w) => w === SETTING).length, 3, 'one full try in every kRetryAfter waits');
  t.is(windows.filter((w) => w !== 0 && w !== SETTING).length, 0);
});

test('a poll that lost its core stops polling for the next waits, then tries the full window', (t) => {
  const probe = governor();
  probe.window(SETTING);
  probe.contended();
  for (let i = 0; i < COOLDOWN; i++) t.is(probe.window(SETTING), 0);
  t.is(probe.window(SETTING), SETTING);
});

test('a setting of 0 never polls, and a lower setting caps the window at once', (t) => {
  const probe = governor();
  t.is(probe.window(0), 0);
  t.is(probe.window(SETTING), SETTING);
  t.is(probe.window(50), 50);
});
