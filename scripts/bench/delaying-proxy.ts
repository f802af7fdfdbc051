// A TCP proxy on 127.0.0.1 that holds every chunk for a fixed delay in each
// direction: a hypervisor a millisecond or two away, on a kernel without netem.
// Run as its own process (so its CPU is nobody's client CPU):
//   node --import=tsx scripts/bench/delaying-proxy.ts TARGET_PORT DELAY_MS
// prints the port it listens on, then serves until killed.
import { createConnection, createServer, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';

const [targetPort, delayMs] = process.argv.slice(2).map(Number) as [number, number];
if (!Number.isInteger(targetPort) || !(delayMs >= 0)) {
  console.error('usage: delaying-proxy.ts TARGET_PORT DELAY_MS');
  process.exit(2);
}

/** Forwards what `from` sends to `to`, each chunk `delayMs` after it arrived, in order. */
function delayLine(from: Socket, to: Socket): void {
  const queue: Array<{ chunk: Buffer; due: number }> = [];
  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    timer = undefined;
    const now = performance.now();
    while (queue.length > 0 && queue[0]!.due <= now) to.write(queue.shift()!.chunk);
    if (queue.length > 0) timer = setTimeout(flush, queue[0]!.due - now);
  };
  from.on('data', (chunk: Buffer) => {
    queue.push({ chunk, due: performance.now() + delayMs });
    timer ??= setTimeout(flush, delayMs);
  });
  from.on('end', () => {
    const finish = () => (queue.length === 0 ? to.end() : setTimeout(finish, delayMs));
    finish();
  });
}

const server = createServer((client) => {
  client.setNoDelay(true);
  const upstream = createConnection({ host: '127.0.0.1', port: targetPort });
  upstream.setNoDelay(true);
  for (const socket of [client, upstream]) socket.on('error', () => [client, upstream].forEach((s) => s.destroy()));
  delayLine(client, upstream);
  delayLine(upstream, client);
});
server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  console.log(typeof address === 'object' && address !== null ? address.port : '');
});
