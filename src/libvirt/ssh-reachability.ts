// libvirt's ssh transport runs the ssh command and talks through its pipes. When ssh
// exits at once because nothing answers at the address, libvirt may be writing to the
// pipe before it reads ssh's message, and then reports only "Cannot write data: Broken
// pipe": the reason is lost. Trying the SSH port ourselves finds it again.
import { connect } from 'node:net';

import { parseLibvirtUri } from './uri.js';

const LOST_REASON = /broken pipe|cannot recv data: *(?:\(|$)|end of file while reading data/i;
const NOTHING_ANSWERS = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTDOWN']);
const PROBE_TIMEOUT_MS = 2_000;

/** Whether a failed ssh-transport connection's message lost why ssh ended. */
export function sshReasonLost(uri: string | null, message: string): boolean {
  return uri !== null && parseLibvirtUri(uri)?.transport === 'ssh' && LOST_REASON.test(message);
}

/** True when nothing accepts a TCP connection at the URI's SSH host and port (22 unless given). */
export async function sshPortUnreachable(uri: string): Promise<boolean> {
  const parsed = parseLibvirtUri(uri);
  if (parsed === undefined) return false;
  const host = parsed.host ?? 'localhost';
  const port = parsed.port ?? 22;
  return new Promise<boolean>((resolve) => {
    const socket = connect({ host, port });
    const done = (unreachable: boolean) => {
      socket.destroy();
      resolve(unreachable);
    };
    socket.setTimeout(PROBE_TIMEOUT_MS, () => done(true));
    socket.once('connect', () => done(false));
    socket.once('error', (error: NodeJS.ErrnoException) => done(NOTHING_ANSWERS.has(error.code ?? '')));
  });
}
