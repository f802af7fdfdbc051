// The README's main job: on a throwaway VM it creates and removes itself, show
// the binding doing real work against the real daemon.
import { connectSystem, createThrowawayDomain, guestWrite } from '../test/helpers/daemon.js';
import { run } from '../test/helpers/process.js';
import { DomainState, formatVersion } from '../src/index.js';

const conn = await connectSystem();
console.log(`connected to ${await conn.getURI()} (libvirt ${formatVersion(await conn.getLibVersion())}, hypervisor ${formatVersion(await conn.getVersion())})`);
const vm = await createThrowawayDomain(conn, 'demo', [{ format: 'qcow2', sizeMiB: 64 }]);
try {
  const { state } = await vm.domain.getState();
  console.log(`domain ${vm.name} is ${DomainState[state]}`);
  await guestWrite(vm.domain, 0, 0x5a, '4M', '1M');
  const check = await run('qemu-io', ['-U', '-r', '-f', 'qcow2', '-c', 'read -P 0x5a 4M 1M', vm.disks[0]!.path]);
  console.log(`guest wrote 1 MiB of 0x5a at 4 MiB; qemu-io confirms: ${check.split('\n')[0]}`);
} finally {
  await vm.cleanup();
  await conn.close();
}
console.log('done: domain and image removed');
