// Opening a connection: virConnectOpenAuth on a call thread, with libvirt's
// credential requests handed to JS and answered asynchronously.
//
// libvirt asks for credentials (a SASL user and password, an SSH key passphrase,
// whether to accept a host key) from inside virConnectOpenAuth, on the thread
// that called it. That call thread posts the requests to the JS thread and waits
// for the answers (never the JS thread: it only runs the handler), until the
// deadline or until the caller gives up on the attempt. Without a handler every
// request is refused at once: nothing ever prompts on a terminal.
#pragma once

#include <napi.h>

namespace lvb {

// openConnection(uri: string | null, flags: number,
//      onCredentials: ((requests, respond) => void) | null, timeoutMs: number)
//   -> ConnectionOpening { promise: Promise<Connection>, abandon(): void }
// timeoutMs bounds how long a credential request waits for its answer (0: no
// bound); the caller times out the attempt as a whole and calls abandon().
Napi::Value OpenConnection(const Napi::CallbackInfo& info);

// open(uri: string | null, flags: number) -> Promise<Connection>: the same without
// credentials or a way to give up.
Napi::Value OpenConnectionPromise(const Napi::CallbackInfo& info);

// The ConnectionOpening class (constructed by OpenConnection only).
Napi::Function InitConnectionOpening(Napi::Env env);

}  // namespace lvb
