// The dispatcher's rules (binding/call_policy.h), without threads or a daemon:
// calls and lanes are numbers, the clock is set by the test (microseconds).
import test from 'ava';

import { nativeAddon, type NativeCallPolicyProbe } from '../../src/libvirt/native.js';

const SLOW_CALL = 1000; // kSlowCall, microseconds
const LATENCY_BOUND = 500; // kLatencyBound, microseconds
const WIDE_LANE = 16; // kWideLaneWidth
const WINDOW_CALLS = 32; // kWindowCalls

function policy(): NativeCallPolicyProbe {
  return new (nativeAddon().CallPolicyProbe)();
}

/** Takes every call that may start at `now`, in the order the policy gives them. */
function takeAll(probe: NativeCallPolicyProbe, now: number): Array<{ call: number; lane: number; runId: number }> {
  const started = [];
  for (;;) {
    const next = probe.take(now);
    if (next.call === null) return started;
    started.push({ call: next.call, lane: next.lane, runId: next.runId });
  }
}

test('calls without a lane start at once, in submission order', (t) => {
  const probe = policy();
  for (let call = 1; call <= 5; call++) t.deepEqual(probe.enqueue(call, 0, 0), { wake: 'now' });
  t.deepEqual(
    takeAll(probe, 0).map((s) => s.call),
    [1, 2, 3, 4, 5],
  );
  t.is(probe.queued(), 0);
});

test('a lane runs two quick calls at once; the third waits for a slot, the rest for their turn', (t) => {
  const probe = policy();
  t.deepEqual(probe.enqueue(1, 7, 0), { wake: 'now' });
  t.deepEqual(probe.enqueue(2, 7, 0), { wake: 'now' });
  const first = takeAll(probe, 0);
  t.deepEqual(
    first.map((s) => s.call),
    [1, 2],
  );
  // Full: the first waiting call is told when a running one turns slow.
  t.deepEqual(probe.enqueue(3, 7, 100), { wake: 'at', at: SLOW_CALL });
  t.deepEqual(probe.enqueue(4, 7, 100), { wake: 'none' });
  const blocked = probe.take(200);
  t.is(blocked.call, null);
  t.is(blocked.nextReady, SLOW_CALL);
  // A finished call frees its slot at once.
  probe.finished(7, first[0]!.runId, 300);
  const third = probe.take(300);
  t.like(third, { call: 3, lane: 7, next: { wake: 'at', at: SLOW_CALL } });
  t.is(probe.take(400).call, null);
  // Call 2 has run for 1 ms: it no longer counts, and call 4 may start.
  t.like(probe.take(SLOW_CALL), { call: 4, lane: 7, next: { wake: 'none' } });
  t.is(probe.queued(), 0);
});

test('a full lane holds up none of the calls behind it on other lanes, which keep submission order', (t) => {
  const probe = policy();
  for (let call = 1; call <= 4; call++) probe.enqueue(call, 1, 0); // lane 1: 1 and 2 start, 3 and 4 wait
  probe.enqueue(5, 2, 0);
  probe.enqueue(6, 0, 0);
  probe.enqueue(7, 3, 0);
  probe.enqueue(8, 2, 0);
  t.deepEqual(
    takeAll(probe, 0).map((s) => s.call),
    [1, 2, 5, 6, 7, 8],
  );
  t.is(probe.queued(), 2);
  t.deepEqual(
    takeAll(probe, SLOW_CALL).map((s) => s.call),
    [3, 4],
    'after 1 ms both running calls turned slow',
  );
});

test('a lane whose calls keep getting stuck still moves one call per millisecond at worst', (t) => {
  const probe = policy();
  for (let call = 1; call <= 6; call++) probe.enqueue(call, 9, 0);
  const starts: Array<[number, number]> = [];
  for (let now = 0; now <= 3 * SLOW_CALL; now += 250) {
    for (const started of takeAll(probe, now)) starts.push([started.call, now]);
  }
  t.deepEqual(starts, [
    [1, 0],
    [2, 0],
    [3, SLOW_CALL],
    [4, SLOW_CALL],
    [5, 2 * SLOW_CALL],
    [6, 2 * SLOW_CALL],
  ]);
});

/** Runs `count` calls on `lane` one after another, each taking `took` µs; returns the clock after. */
function runSequentially(probe: NativeCallPolicyProbe, lane: number, count: number, took: number, now: number): number {
  for (let i = 0; i < count; i++) {
    probe.enqueue(i, lane, now);
    const started = probe.take(now);
    if (started.call === null) throw new Error(`call ${i} on lane ${lane} did not start`);
    now += took;
    probe.finished(lane, started.runId, now);
  }
  return now;
}

/** How many of 20 calls queued on `lane` at `now` may start at once. */
function startableAt(probe: NativeCallPolicyProbe, lane: number, now: number): Array<{ call: number; lane: number; runId: number }> {
  for (let call = 0; call < 20; call++) probe.enqueue(100 + call, lane, now);
  return takeAll(probe, now);
}

test('a lane whose quickest calls wait on the network runs up to 16 at once; a close one stays at two', (t) => {
  const probe = policy();
  // Lane 1: a daemon close by (150 µs calls); lane 2: a link 2 ms away.
  let now = runSequentially(probe, 1, 10, 150, 0);
  now = runSequentially(probe, 2, 10, 2000 + LATENCY_BOUND, now);
  t.is(startableAt(probe, 1, now).length, 2);
  const wide = startableAt(probe, 2, now);
  t.is(wide.length, WIDE_LANE);
  t.true(
    wide.every((s) => s.lane === 2),
    'only the far lane widens',
  );
});

test('one slow call among quick ones does not widen a lane', (t) => {
  const probe = policy();
  let now = runSequentially(probe, 3, 20, 150, 0);
  now = runSequentially(probe, 3, 1, 50_000, now);
  t.is(startableAt(probe, 3, now).length, 2);
});

test('a far link that turns fast is narrow again within two windows of calls', (t) => {
  const probe = policy();
  let now = runSequentially(probe, 4, WINDOW_CALLS, 3000, 0);
  now = runSequentially(probe, 4, WINDOW_CALLS, 150, now);
  t.is(startableAt(probe, 5, now).length, 2, 'another lane is unaffected');
  now = runSequentially(probe, 4, WINDOW_CALLS, 150, now);
  t.is(startableAt(probe, 4, now).length, 2);
});

test('one call is enough to learn that a link is far', (t) => {
  const probe = policy();
  const now = runSequentially(probe, 6, 1, 2500, 0);
  t.is(startableAt(probe, 6, now).length, WIDE_LANE);
});

test('a burst stays cheap: 40 000 calls queued behind a full lane are taken without scanning the queue', (t) => {
  const probe = policy();
  const calls = 20_000;
  const started = process.hrtime.bigint();
  // One stuck connection with a long backlog, then a call on each of many others.
  for (let call = 0; call < calls; call++) probe.enqueue(call, 1, 0);
  for (let call = 0; call < calls; call++) probe.enqueue(calls + call, 2 + call, 0);
  const taken = takeAll(probe, 0);
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  t.is(taken.length, calls + 2);
  t.is(probe.queued(), calls - 2);
  for (const { lane, runId } of taken) probe.finished(lane, runId, 1);
  t.is(takeAll(probe, 1).length, 2);
  t.log(`${2 * calls} calls queued and ${taken.length} taken in ${ms.toFixed(0)} ms`);
  // A scan of the queue for each call taken would be some 4e8 steps here.
  t.true(ms < 2_000, `${ms} ms`);
});
