// A domain libvirt reports as shut off while its QEMU still runs on this host.
import { readdir, readFile } from 'node:fs/promises';
import { basename } from 'node:path';

/**
 * libvirt 9.0 killed while it starts a backup job can save the domain's state in a
 * form it cannot load again ("Missing required attribute 'state' in element 'disk'"):
 * started again, it reports the running domain as shut off, and its QEMU runs on,
 * unmanaged. Reading the images then, or starting the domain, would meet that QEMU.
 * libvirt starts QEMU with `-name guest=NAME,...` (commas in NAME doubled), which is
 * how the process is found. Returns its pid, or null when there is none.
 */
export async function qemuStillRunning(domainName: string): Promise<number | null> {
  const wanted = `guest=${domainName.replaceAll(',', ',,')}`;
  let entries: string[];
  try {
    entries = await readdir('/proc');
  } catch {
    return null;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    const argv = await readFile(`/proc/${entry}/cmdline`, 'latin1').then(
      (text) => text.split('\0'),
      () => [] as string[],
    );
    if (!isQemu(argv[0])) continue;
    const name = argv.indexOf('-name');
    const value = name >= 0 ? argv[name + 1] : undefined;
    if (value === wanted || value?.startsWith(`${wanted},`) === true) return Number(entry);
  }
  return null;
}

function isQemu(program: string | undefined): boolean {
  if (program === undefined) return false;
  const name = basename(program);
  return name.startsWith('qemu-system-') || name === 'qemu-kvm';
}
