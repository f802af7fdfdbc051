import { nativeAddon, NATIVE_SURFACE, type NativeConnection } from '../../src/libvirt/native.js';

/**
 * A real native connection whose methods can be replaced one by one, to make a
 * call fail the way a daemon might (a Proxy would not do: native methods check
 * their receiver).
 */
export async function openNativeWith(uri: string, overrides: Partial<NativeConnection>): Promise<NativeConnection> {
  const real = await nativeAddon().open(uri, 0);
  const forwarded: Record<string, unknown> = {};
  for (const name of Object.keys(NATIVE_SURFACE.Connection) as Array<keyof NativeConnection>) {
    const method = real[name] as (...args: unknown[]) => unknown;
    forwarded[name] = (...args: unknown[]) => method.apply(real, args);
  }
  return Object.assign(forwarded, overrides) as unknown as NativeConnection;
}
