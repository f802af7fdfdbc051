import { nativeAddon, NATIVE_SURFACE, type NativeConnection, type NativeDomain } from '../../src/libvirt/native.js';

/** A plain object forwarding each listed method to `real` (a Proxy would not do: native methods check their receiver). */
function forwarding<T extends object>(real: T, names: ReadonlyArray<keyof T>): Record<string, unknown> {
  const forwarded: Record<string, unknown> = {};
  for (const name of names) {
    const method = real[name] as (...args: unknown[]) => unknown;
    forwarded[name as string] = (...args: unknown[]) => method.apply(real, args);
  }
  return forwarded;
}

/**
 * A real native connection whose methods can be replaced one by one, to make a
 * call fail the way a daemon might. `domainOverrides` replaces methods of the
 * domains it looks up the same way.
 */
export async function openNativeWith(
  uri: string,
  overrides: Partial<NativeConnection>,
  domainOverrides: Partial<NativeDomain> = {},
): Promise<NativeConnection> {
  const real = await nativeAddon().open(uri, 0);
  const forwarded = forwarding(real, Object.keys(NATIVE_SURFACE.Connection) as Array<keyof NativeConnection>);
  if (Object.keys(domainOverrides).length > 0) {
    const wrap = (domain: NativeDomain) =>
      Object.assign(forwarding(domain, Object.keys(NATIVE_SURFACE.Domain) as Array<keyof NativeDomain>), domainOverrides) as unknown as NativeDomain;
    forwarded.lookupDomainByName = async (name: string) => wrap(await real.lookupDomainByName(name));
    forwarded.lookupDomainByUUID = async (uuid: string) => wrap(await real.lookupDomainByUUID(uuid));
    forwarded.listAllDomains = async (flags: number) => (await real.listAllDomains(flags)).map(wrap);
  }
  return Object.assign(forwarded, overrides) as unknown as NativeConnection;
}
