// The throwaway domains of the benches have no operating system: under emulation their
// firmware spends the first seconds after start looking for one, a core's worth of CPU
// in the vCPU thread, then halts. Timing starts once every guest has gone quiet, so
// that the first round does not share the cores with a booting firmware (it made the
// first backup of a suite up to twice as slow as the next ones).
import { readFileSync } from 'node:fs';

import { processCpuSeconds } from './process-cpu.js';

const QUIET_CPU_SECONDS = 0.05;
const WINDOW_MS = 1000;

function qemuCpuSeconds(domain: string): number {
  const pid = readFileSync(`/run/libvirt/qemu/${domain}.pid`, 'utf8').trim();
  return processCpuSeconds(pid);
}

/** Waits until each domain's QEMU spends under 50 ms of CPU in a second (at most `timeoutMs`); says how long it took. */
export async function waitForSettledGuests(domains: readonly string[], timeoutMs = 60_000): Promise<number> {
  const started = performance.now();
  let before = domains.map(qemuCpuSeconds);
  while (performance.now() - started < timeoutMs) {
    await new Promise((resolve) => setTimeout(resolve, WINDOW_MS));
    const now = domains.map(qemuCpuSeconds);
    const quiet = now.every((cpu, index) => cpu - before[index]! < QUIET_CPU_SECONDS);
    before = now;
    if (quiet) break;
  }
  const seconds = (performance.now() - started) / 1000;
  console.log(`guests settled after ${seconds.toFixed(1)} s`);
  return seconds;
}
