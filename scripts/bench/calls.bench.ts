// Call throughput on one connection to qemu:///system: getXMLDesc of a running
// domain, sequential and 16-way concurrent, against libvirt-python (sequential;
// it has no async API) measured in the same run on the same domain.
import { execFileSync } from 'node:child_process';
import { performance } from 'node:perf_hooks';

import { configureCalls, getCallTuning } from '../../src/index.js';
import { connectSystem, createThrowawayDomain } from '../../test/helpers/daemon.js';

const CALLS = Number(process.env.BENCH_CALLS ?? 3000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);

// One timed round of libvirt-python in a fresh interpreter (start-up not timed).
function pythonRound(domainName: string): number {
  const script = `
import libvirt, sys, time
conn = libvirt.open('qemu:///system')
dom = conn.lookupByName(sys.argv[1])
n = int(sys.argv[2])
for _ in range(200): dom.XMLDesc(0)
start = time.perf_counter()
for _ in range(n): dom.XMLDesc(0)
print(n / (time.perf_counter() - start))
`;
  const out = execFileSync('/usr/bin/python3', ['-c', script, domainName, String(CALLS)], { encoding: 'utf8' });
  return Number(out.trim());
}

async function rate(run: () => Promise<void>): Promise<number> {
  const start = performance.now();
  await run();
  return CALLS / ((performance.now() - start) / 1000);
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

const conn = await connectSystem();
const vm = await createThrowawayDomain(conn, 'bench-calls', [{ sizeMiB: 8 }]);
try {
  const { domain } = vm;
  for (let i = 0; i < 200; i++) await domain.getXMLDesc();
  const sequentialRun = async () => {
    for (let i = 0; i < CALLS; i++) await domain.getXMLDesc();
  };
  const concurrentRun = async () => {
    let next = 0;
    const lane = async () => {
      while (next++ < CALLS) await domain.getXMLDesc();
    };
    await Promise.all(Array.from({ length: 16 }, lane));
  };
  // Rounds alternate between the four, so drift in the machine's speed hits all alike.
  const tuning = getCallTuning();
  const python: number[] = [];
  const sequential: number[] = [];
  const concurrent: number[] = [];
  const sequentialNoPoll: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    python.push(pythonRound(vm.name));
    sequential.push(await rate(sequentialRun));
    concurrent.push(await rate(concurrentRun));
    configureCalls({ busyPollMicroseconds: 0 });
    sequentialNoPoll.push(await rate(sequentialRun));
    configureCalls(tuning);
  }
  const p = median(python);
  const s = median(sequential);
  const c = median(concurrent);
  const n = median(sequentialNoPoll);
  const show = (values: number[]) => values.map((v) => v.toFixed(0)).join(' ');
  console.log(`getXMLDesc on qemu:///system, ${CALLS} calls per round, ${ROUNDS} alternating rounds, medians (call tuning ${JSON.stringify(tuning)})`);
  console.log('| what | calls/s | vs libvirt-python | rounds |');
  console.log('| --- | ---: | ---: | --- |');
  console.log(`| libvirt-python, sequential | ${p.toFixed(0)} | 1.00x | ${show(python)} |`);
  console.log(`| libvirt-backup, sequential | ${s.toFixed(0)} | ${(s / p).toFixed(2)}x | ${show(sequential)} |`);
  console.log(`| libvirt-backup, 16 concurrent | ${c.toFixed(0)} | ${(c / p).toFixed(2)}x | ${show(concurrent)} |`);
  console.log(`| libvirt-backup, sequential, busyPollMicroseconds: 0 | ${n.toFixed(0)} | ${(n / p).toFixed(2)}x | ${show(sequentialNoPoll)} |`);
  console.log(`targets: sequential >= 0.9x (${s / p >= 0.9 ? 'met' : 'MISSED'}), concurrent >= 2x (${c / p >= 2 ? 'met' : 'MISSED'})`);
} finally {
  await vm.cleanup();
  await conn.close();
}
