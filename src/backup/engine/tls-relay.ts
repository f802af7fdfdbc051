// NBD over TLS with the handshake and the decryption on the addon's GnuTLS threads
// (binding/tls_relay.h) instead of Node's TLS on the JS thread. The backup engine
// uses it for every TLS export; NbdClient users pass it as `tls.relay`.
import { closeSync } from 'node:fs';

import { nativeAddon } from '../../libvirt/native.js';
import type { NbdTlsRelay } from '../../nbd/index.js';

/** An `NbdTlsRelay` running GnuTLS on threads of the addon. */
export const tlsRelay: NbdTlsRelay = async (fd, request, signal) => {
  signal?.throwIfAborted();
  const started = nativeAddon().startTlsRelay(fd, request);
  const cancel = (): void => started.cancel();
  signal?.addEventListener('abort', cancel, { once: true });
  try {
    const plain = await started.promise;
    if (signal?.aborted) {
      closeSync(plain);
      throw signal.reason;
    }
    return plain;
  } finally {
    signal?.removeEventListener('abort', cancel);
  }
};
