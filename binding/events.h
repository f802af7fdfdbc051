// Domain events and the connection close callback, from libvirt's event loop
// thread (see event_loop.h) to JS through thread-safe functions.
//
// Each registration owns one thread-safe function. libvirt owns the registration
// once the register call succeeded and hands it back through its free callback
// when the callback is removed (or the connection is disposed); only then is the
// thread-safe function released. Events are queued without bound, in the order
// libvirt dispatched them.
#pragma once

#include <libvirt/libvirt.h>
#include <napi.h>

namespace lvb {

struct EventRegistration;

// The libvirt callback for `eventId` (a VIR_DOMAIN_EVENT_ID_*), or null when this
// build does not deliver that event kind.
virConnectDomainEventGenericCallback DomainEventCallbackFor(int eventId);

// Creates the registration for `eventId` that calls `callback(domain, payload)`
// on the JS thread; `connection` is the JS Connection whose child the domain is.
EventRegistration* NewDomainEventRegistration(Napi::Env env, Napi::Object connection, int eventId,
                                              Napi::Function callback);

// A registration for virConnectRegisterCloseCallback: calls `callback(reason)`.
EventRegistration* NewCloseRegistration(Napi::Env env, Napi::Object connection, Napi::Function callback);

void OnConnectionClosed(virConnectPtr conn, int reason, void* opaque);

// libvirt's free callback; also used when registration failed.
void FreeEventRegistration(void* opaque);

}  // namespace lvb
