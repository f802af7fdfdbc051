// TLS for an NBD connection, run by GnuTLS on threads of its own instead of Node's
// TLS on the JS thread. The JS side keeps speaking plain NBD, over one end of a
// local socket pair; two threads move the bytes between the other end and the
// encrypted TCP connection. Node's TLS decrypts on the JS thread and hands every
// 16 KiB record to JS as a Buffer of its own: about 1.3 s of JS-thread CPU per GiB on
// top of plain TCP. Here the JS thread reads plain bytes in large pieces, straight
// into their destination, as over a local socket, and the decryption runs beside it.
#pragma once

#include <napi.h>

namespace lvb {

// startTlsRelay(fd, { ca?, cert?, key?, verifyName?, serverName?, verify, timeoutMs })
// -> { promise, cancel }. `fd` is a connected TCP socket whose TLS handshake is
// about to start (NBD_OPT_STARTTLS acknowledged); it is duplicated at once, so the
// caller closes its own descriptor without reading from it again. The promise
// resolves with the descriptor of the plain-text end, or rejects with what went
// wrong in the handshake (an untrusted certificate says why). cancel() ends a
// handshake still running.
Napi::Value StartTlsRelay(const Napi::CallbackInfo& info);

}  // namespace lvb
