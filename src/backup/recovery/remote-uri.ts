/**
 * Whether a libvirt URI reaches the daemon over the network (a remote transport or a
 * host name): then the hypervisor's files are not this host's, and what runs here
 * (qemu-img, qemu-nbd) cannot reach them.
 */
export function isRemoteConnection(uri: string): boolean {
  const match = /^[A-Za-z][A-Za-z0-9]*(?:\+([A-Za-z0-9]+))?:\/\/([^/?#]*)/.exec(uri);
  if (match === null) return false;
  const transport = match[1]?.toLowerCase();
  if (transport === 'unix') return false;
  return transport !== undefined || match[2] !== '';
}
