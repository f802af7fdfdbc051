// libvirtd's own view of its clients (virt-admin), so a test can make the daemon drop
// one connection of this process, as a daemon that crashed or restarted would, without
// stopping the daemon other tests share.
import { execFileSync } from 'node:child_process';

import type { Connection } from '../../src/index.js';
import { connectSystem } from './daemon.js';
import { run } from './process.js';

/** Ids of libvirtd's clients that are connections of this process. */
export async function clientsOfThisProcess(): Promise<string[]> {
  const listed = await run('virt-admin', ['srv-clients-list', 'libvirtd']);
  const ids = [...listed.matchAll(/^\s*(\d+)\s+unix\s/gm)].map((match) => match[1]!);
  const ours: string[] = [];
  for (const id of ids) {
    const info = await run('virt-admin', ['client-info', 'libvirtd', id]).catch(() => '');
    if (new RegExp(`^unix_process_id\\s*:\\s*${process.pid}$`, 'm').test(info)) ours.push(id);
  }
  return ours;
}

/**
 * A connection to qemu:///system that `drop()` makes libvirtd close from its side. Tests
 * that use it must not open other connections of this process at the same time (run them
 * serially): the new connection is told apart from the others by its client id.
 */
export async function droppableConnection(): Promise<{ conn: Connection; drop(): void }> {
  const before = new Set(await clientsOfThisProcess());
  const conn = await connectSystem();
  const added = (await clientsOfThisProcess()).filter((id) => !before.has(id));
  if (added.length !== 1) throw new Error(`expected one new libvirtd client for the connection, found ${added.length}`);
  return {
    conn,
    // Synchronous, so that it can run inside an event callback and land before the next call.
    drop: () => execFileSync('virt-admin', ['client-disconnect', 'libvirtd', added[0]!], { stdio: 'ignore' }),
  };
}
