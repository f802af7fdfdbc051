import { connect, type Connection } from '../../libvirt/connection.js';
import { DomainXMLFlags } from '../../libvirt/constants.js';
import { LibvirtError } from '../../libvirt/errors.js';
import { parseDomainXml } from '../../xml/index.js';
import type { SetUser, SetUserCheck, SetUserState } from '../set/set-users.js';

/** A check of recorded set users that asks libvirt, and the means to close the connections it opened. */
export interface LibvirtSetUserCheck {
  check: SetUserCheck;
  /** Closes the connections the checks opened (not the one passed in). */
  close(): Promise<void>;
}

/**
 * Answers whether a domain recorded as running from a set still does, by asking the
 * libvirt it was defined on: it does while its live or persistent definition has a
 * disk on one of its overlays. A domain that is gone, or whose disks moved elsewhere,
 * no longer needs the set. `connection` is used for records of its own URI; others
 * get a connection of their own.
 */
export function libvirtSetUserCheck(connection?: Connection): LibvirtSetUserCheck {
  const opened = new Map<string, Promise<Connection>>();
  const connectionFor = async (uri: string): Promise<Connection> => {
    if (connection !== undefined && (await connection.getURI()) === uri) return connection;
    let pending = opened.get(uri);
    if (pending === undefined) {
      pending = connect(uri, { readOnly: true, timeoutMs: 15_000 });
      opened.set(uri, pending);
    }
    return pending;
  };
  return {
    check: async (user) => domainUsesOverlays(await connectionFor(user.uri), user),
    async close() {
      for (const pending of opened.values()) await (await pending.catch(() => undefined))?.close().catch(() => undefined);
      opened.clear();
    },
  };
}

async function domainUsesOverlays(connection: Connection, user: SetUser): Promise<SetUserState> {
  let domain;
  try {
    domain = await connection.lookupDomainByUUID(user.domain.uuid);
  } catch (error) {
    if (error instanceof LibvirtError && error.codeName === 'VIR_ERR_NO_DOMAIN')
      return { inUse: false, reason: `domain '${user.domain.name}' no longer exists` };
    throw error;
  }
  const running = await domain.isActive();
  const definitions = [await domain.getXMLDesc()];
  if (running && (await domain.isPersistent())) definitions.push(await domain.getXMLDesc(DomainXMLFlags.INACTIVE));
  const overlays = new Set(user.overlays.map((overlay) => overlay.path));
  const onOverlays = definitions.some((xml) => parseDomainXml(xml).disks.some((disk) => disk.source?.file !== undefined && overlays.has(disk.source.file)));
  if (!onOverlays) return { inUse: false, reason: `the disks of domain '${user.domain.name}' no longer use its overlays` };
  return { inUse: true, state: running ? 'running' : 'shut off' };
}
