// Call throughput on one connection to qemu:///system: getXMLDesc of a running
// domain, sequential and 16-way concurrent, against libvirt-python (sequential;
// it has no async API) measured in the same run on the same domain.
import { execFileSync } from 'node:child_process';
import { performance } from 'node:perf_hooks';

import { connectSystem, createThrowawayDomain } from '../../test/helpers/daemon.js';

const CALLS = Number(process.env.BENCH_CALLS ?? 3000);
const ROUNDS = 3;

function pythonCallsPerSecond(domainName: string): number {
  const script = `
import libvirt, sys, time
conn = libvirt.open('qemu:///system')
dom = conn.lookupByName(sys.argv[1])
n = int(sys.argv[2])
for _ in range(200): dom.XMLDesc(0)
best = 0.0
for _ in range(${ROUNDS}):
    start = time.perf_counter()
    for _ in range(n): dom.XMLDesc(0)
    best = max(best, n / (time.perf_counter() - start))
print(best)
`;
  const out = execFileSync('/usr/bin/python3', ['-c', script, domainName, String(CALLS)], { encoding: 'utf8' });
  return Number(out.trim());
}

async function best(run: () => Promise<void>): Promise<number> {
  let bestRate = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const start = performance.now();
    await run();
    bestRate = Math.max(bestRate, CALLS / ((performance.now() - start) / 1000));
  }
  return bestRate;
}

const conn = await connectSystem();
const vm = await createThrowawayDomain(conn, 'bench-calls', [{ sizeMiB: 8 }]);
try {
  const { domain } = vm;
  for (let i = 0; i < 200; i++) await domain.getXMLDesc();

  const sequential = await best(async () => {
    for (let i = 0; i < CALLS; i++) await domain.getXMLDesc();
  });
  const concurrent = await best(async () => {
    let next = 0;
    const lane = async () => {
      while (next++ < CALLS) await domain.getXMLDesc();
    };
    await Promise.all(Array.from({ length: 16 }, lane));
  });
  const python = pythonCallsPerSecond(vm.name);

  const rows = [
    ['libvirt-python, sequential', python, 1],
    ['libvirt-backup, sequential', sequential, sequential / python],
    ['libvirt-backup, 16 concurrent', concurrent, concurrent / python],
  ] as const;
  console.log(`getXMLDesc on qemu:///system, ${CALLS} calls, best of ${ROUNDS} (UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE ?? 4})`);
  console.log('| what | calls/s | vs libvirt-python |');
  console.log('| --- | ---: | ---: |');
  for (const [what, rate, ratio] of rows) console.log(`| ${what} | ${rate.toFixed(0)} | ${ratio.toFixed(2)}x |`);
  console.log(`targets: sequential >= 0.9x (${sequential / python >= 0.9 ? 'met' : 'MISSED'}), concurrent >= 2x (${concurrent / python >= 2 ? 'met' : 'MISSED'})`);
} finally {
  await vm.cleanup();
  await conn.close();
}
