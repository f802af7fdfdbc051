#include "connection.h"

#include <libvirt/virterror.h>

#include <chrono>
#include <cstdlib>
#include <thread>
#include <vector>

#include "addon.h"
#include "domain.h"
#include "errors.h"
#include "event_channel.h"
#include "worker.h"

namespace lvb {

const napi_type_tag ConnectionWrap::kTypeTag = {0x6c766263'6f6e6e65ULL, 0x6374696f'6e000001ULL};

Napi::Function ConnectionWrap::Init(Napi::Env env) {
  using W = ConnectionWrap;
  return DefineCheckedClass<W>(env, {
                                        MethodProperty<W, &W::Close>(env, "close"),
                                        MethodProperty<W, &W::GetLibVersion>(env, "getLibVersion"),
                                        MethodProperty<W, &W::GetVersion>(env, "getVersion"),
                                        MethodProperty<W, &W::GetHostname>(env, "getHostname"),
                                        MethodProperty<W, &W::GetURI>(env, "getURI"),
                                        MethodProperty<W, &W::GetCapabilities>(env, "getCapabilities"),
                                        MethodProperty<W, &W::GetDomainCapabilities>(env, "getDomainCapabilities"),
                                        MethodProperty<W, &W::IsAlive>(env, "isAlive"),
                                        MethodProperty<W, &W::IsClosed>(env, "isClosed"),
                                        MethodProperty<W, &W::ListAllDomains>(env, "listAllDomains"),
                                        MethodProperty<W, &W::LookupDomainByName>(env, "lookupDomainByName"),
                                        MethodProperty<W, &W::LookupDomainByUUID>(env, "lookupDomainByUUID"),
                                        MethodProperty<W, &W::DefineDomain>(env, "defineDomain"),
                                        MethodProperty<W, &W::CreateDomain>(env, "createDomain"),
                                        MethodProperty<W, &W::SetEventHandler>(env, "setEventHandler"),
                                        MethodProperty<W, &W::RegisterDomainEvent>(env, "registerDomainEvent"),
                                        MethodProperty<W, &W::DeregisterDomainEvent>(env, "deregisterDomainEvent"),
                                        MethodProperty<W, &W::RegisterCloseCallback>(env, "registerCloseCallback"),
                                        MethodProperty<W, &W::UnregisterCloseCallback>(env, "unregisterCloseCallback"),
                                        MethodProperty<W, &W::SetKeepAlive>(env, "setKeepAlive"),
                                    });
}

namespace {

// How long close waits, once no callback is left, for an event the daemon was already
// sending when the callback went.
constexpr auto kLateEventSettle = std::chrono::milliseconds(50);

// libvirt 9.0's remote driver makes the connection's last round trip (CONNECT_CLOSE)
// from inside its finalizer, and dispatches whatever arrives meanwhile. A domain event
// arriving then takes a reference on the connection being finalized (GLib warns
// "object already finalized"), whose release finalizes it again on the same thread;
// that second close waits for the client lock the first one holds, forever. The
// daemon can still send an event after the callback's deregistration returned (its
// relay had already started), so such an event is let in, and read while the
// connection is alive: a pause, then one round trip, which reads everything the
// daemon sent before its reply.
void DrainLateEvents(virConnectPtr conn) {
  std::this_thread::sleep_for(kLateEventSettle);
  free(virConnectGetHostname(conn));
}

}  // namespace

ConnectionWrap::ConnectionWrap(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<ConnectionWrap>(info), state_(std::make_shared<ConnectionState>()) {
  // Only Open() constructs connections: it passes the owner of the handle as an
  // External, which JS code cannot forge.
  if (info.Length() < 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(info.Env(), "Illegal constructor: use connect()");
  }
  state_->conn = std::move(*info[0].As<Napi::External<OwnedConnection>>().Data());
  info.This().As<Napi::Object>().TypeTag(&kTypeTag);
}

ConnectionWrap::~ConnectionWrap() {
  // The connection's own reference goes to the release thread with state_->conn.
  if (!state_->closed) MarkClosed();
  // Collected without close() once its event listeners went: an event may still be on
  // its way (see DrainLateEvents), let in before the last reference goes.
  if (events_ && events_->domainEventsEverRegistered() && state_->conn) {
    virConnectPtr conn = state_->conn.release();
    ReleaseInBackground([conn] {
      DrainLateEvents(conn);
      virConnectClose(conn);
    });
  }
}

void ConnectionWrap::MarkClosed() {
  state_->closed = true;
  for (ChildHandle* child : state_->children) child->ReleaseForClose();
  state_->children.clear();
}

template <typename T>
Napi::Value ConnectionWrap::Async(const Napi::CallbackInfo& info, const char* operation,
                                  std::function<bool(virConnectPtr, T&)> work,
                                  std::function<Napi::Value(Napi::Env, T)> convert) {
  return QueueCall<T>(info, state_, state_->conn.get(), operation, std::move(work), std::move(convert));
}

namespace {

Napi::Value StringResult(Napi::Env env, const std::string& value) { return Napi::String::New(env, value); }

Napi::Value NumberResult(Napi::Env env, unsigned long value) {
  return Napi::Number::New(env, static_cast<double>(value));
}

Napi::Value UndefinedResult(Napi::Env env, int) { return env.Undefined(); }

}  // namespace

Napi::Value ConnectionWrap::AsyncDomain(const Napi::CallbackInfo& info, const char* operation,
                                        std::function<virDomainPtr(virConnectPtr)> work) {
  Napi::Object self = info.This().As<Napi::Object>();
  auto selfRef = std::make_shared<Napi::ObjectReference>(Napi::Persistent(self));
  return Async<OwnedDomain>(
      info, operation,
      [work = std::move(work)](virConnectPtr conn, OwnedDomain& out) {
        out.reset(work(conn));
        return out != nullptr;
      },
      [selfRef](Napi::Env env, OwnedDomain dom) -> Napi::Value {
        return DomainWrap::Wrap(env, selfRef->Value(), std::move(dom));
      });
}

namespace {

// What close() removes from libvirt before the connection's own reference goes:
// filled on the JS thread once no call is in flight, read by the close's work.
struct RegistrationsToRemove {
  std::vector<int> domainCallbackIds;
  bool closeCallback = false;
  bool drainLateEvents = false;
};

}  // namespace

// Calls on the connection and its children reject from here on; calls already in
// flight run to their end, and only then are the event registrations removed and
// the connection's own reference dropped (the promise settles after all of that).
Napi::Value ConnectionWrap::Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (state_->closed) {
    auto deferred = Napi::Promise::Deferred::New(env);
    deferred.Resolve(env.Undefined());
    return deferred.Promise();
  }
  virConnectPtr conn = state_->conn.get();
  HeldReference ownReference(std::move(state_->conn));
  MarkClosed();
  auto toRemove = std::make_shared<RegistrationsToRemove>();
  auto pending = std::make_shared<std::unique_ptr<LibvirtCall<int>>>(LibvirtCall<int>::Prepare(
      env, info.This().As<Napi::Object>(), "virConnectClose", std::move(ownReference),
      [conn, toRemove](int&) {
        // Failures here change nothing: the connection goes anyway.
        for (int callbackId : toRemove->domainCallbackIds) virConnectDomainEventDeregisterAny(conn, callbackId);
        if (toRemove->closeCallback) virConnectUnregisterCloseCallback(conn, OnConnectionClosed);
        if (toRemove->drainLateEvents) DrainLateEvents(conn);
        virResetLastError();
        return true;
      },
      [this](Napi::Env env, int) -> Napi::Value {
        if (events_) events_->Shutdown();
        return env.Undefined();
      }));
  Napi::Value promise = WithCallers(env, (*pending)->Promise());
  state_->WhenIdle([this, env, toRemove, pending] {
    if (events_) {
      toRemove->domainCallbackIds = events_->domainCallbackIds();
      toRemove->closeCallback = events_->closeCallbackRegistered();
      toRemove->drainLateEvents = events_->domainEventsEverRegistered();
    }
    LibvirtCall<int>::Submit(env, nullptr, std::move(*pending));
  });
  return promise;
}

Napi::Value ConnectionWrap::GetLibVersion(const Napi::CallbackInfo& info) {
  return Async<unsigned long>(
      info, "virConnectGetLibVersion",
      [](virConnectPtr conn, unsigned long& out) { return virConnectGetLibVersion(conn, &out) == 0; }, NumberResult);
}

Napi::Value ConnectionWrap::GetVersion(const Napi::CallbackInfo& info) {
  return Async<unsigned long>(
      info, "virConnectGetVersion",
      [](virConnectPtr conn, unsigned long& out) { return virConnectGetVersion(conn, &out) == 0; }, NumberResult);
}

Napi::Value ConnectionWrap::GetHostname(const Napi::CallbackInfo& info) {
  return Async<std::string>(
      info, "virConnectGetHostname",
      [](virConnectPtr conn, std::string& out) { return TakeCString(virConnectGetHostname(conn), out); }, StringResult);
}

Napi::Value ConnectionWrap::GetURI(const Napi::CallbackInfo& info) {
  return Async<std::string>(
      info, "virConnectGetURI",
      [](virConnectPtr conn, std::string& out) { return TakeCString(virConnectGetURI(conn), out); }, StringResult);
}

Napi::Value ConnectionWrap::GetCapabilities(const Napi::CallbackInfo& info) {
  return Async<std::string>(
      info, "virConnectGetCapabilities",
      [](virConnectPtr conn, std::string& out) { return TakeCString(virConnectGetCapabilities(conn), out); },
      StringResult);
}

// getDomainCapabilities(emulatorbin?, arch?, machine?, virttype?, flags?)
Napi::Value ConnectionWrap::GetDomainCapabilities(const Napi::CallbackInfo& info) {
  auto emulator = OptionalStringArg(info, 0, "emulatorbin");
  auto arch = OptionalStringArg(info, 1, "arch");
  auto machine = OptionalStringArg(info, 2, "machine");
  auto virttype = OptionalStringArg(info, 3, "virttype");
  unsigned int flags = FlagsArg(info, 4);
  auto cstr = [](const std::optional<std::string>& s) { return s ? s->c_str() : nullptr; };
  return Async<std::string>(
      info, "virConnectGetDomainCapabilities",
      [=](virConnectPtr conn, std::string& out) {
        return TakeCString(
            virConnectGetDomainCapabilities(conn, cstr(emulator), cstr(arch), cstr(machine), cstr(virttype), flags),
            out);
      },
      StringResult);
}

Napi::Value ConnectionWrap::IsAlive(const Napi::CallbackInfo& info) {
  if (state_->closed) {
    auto deferred = Napi::Promise::Deferred::New(info.Env());
    deferred.Resolve(Napi::Boolean::New(info.Env(), false));
    return deferred.Promise();
  }
  return Async<int>(
      info, "virConnectIsAlive",
      [](virConnectPtr conn, int& out) {
        out = virConnectIsAlive(conn);
        return out >= 0;
      },
      [](Napi::Env env, int alive) -> Napi::Value { return Napi::Boolean::New(env, alive == 1); });
}

Napi::Value ConnectionWrap::IsClosed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), state_->closed);
}

Napi::Value ConnectionWrap::ListAllDomains(const Napi::CallbackInfo& info) {
  unsigned int flags = FlagsArg(info, 0);
  Napi::Object self = info.This().As<Napi::Object>();
  auto selfRef = std::make_shared<Napi::ObjectReference>(Napi::Persistent(self));
  return Async<std::vector<OwnedDomain>>(
      info, "virConnectListAllDomains",
      [flags](virConnectPtr conn, std::vector<OwnedDomain>& out) {
        virDomainPtr* doms = nullptr;
        int count = virConnectListAllDomains(conn, &doms, flags);
        if (count < 0) return false;
        out = AdoptList(doms, count);
        return true;
      },
      [selfRef](Napi::Env env, std::vector<OwnedDomain> doms) -> Napi::Value {
        // If one cannot be wrapped (the connection was closed meanwhile), the
        // owners left in `doms` free the rest.
        Napi::Array result = Napi::Array::New(env, doms.size());
        for (size_t i = 0; i < doms.size(); i++) {
          result.Set(i, DomainWrap::Wrap(env, selfRef->Value(), std::move(doms[i])));
        }
        return result;
      });
}

Napi::Value ConnectionWrap::LookupDomainByName(const Napi::CallbackInfo& info) {
  std::string name = StringArg(info, 0, "name");
  return AsyncDomain(info, "virDomainLookupByName",
                     [name](virConnectPtr conn) { return virDomainLookupByName(conn, name.c_str()); });
}

Napi::Value ConnectionWrap::LookupDomainByUUID(const Napi::CallbackInfo& info) {
  std::string uuid = StringArg(info, 0, "uuid");
  return AsyncDomain(info, "virDomainLookupByUUIDString",
                     [uuid](virConnectPtr conn) { return virDomainLookupByUUIDString(conn, uuid.c_str()); });
}

Napi::Value ConnectionWrap::DefineDomain(const Napi::CallbackInfo& info) {
  std::string xml = StringArg(info, 0, "xml");
  unsigned int flags = FlagsArg(info, 1);
  return AsyncDomain(info, "virDomainDefineXMLFlags",
                     [xml, flags](virConnectPtr conn) { return virDomainDefineXMLFlags(conn, xml.c_str(), flags); });
}

Napi::Value ConnectionWrap::CreateDomain(const Napi::CallbackInfo& info) {
  std::string xml = StringArg(info, 0, "xml");
  unsigned int flags = FlagsArg(info, 1);
  return AsyncDomain(info, "virDomainCreateXML",
                     [xml, flags](virConnectPtr conn) { return virDomainCreateXML(conn, xml.c_str(), flags); });
}

EventChannel& ConnectionWrap::Events(Napi::Env env) {
  if (!events_) ThrowTypeError(env, "setEventHandler() must be called before registering events");
  return *events_;
}

// setEventHandler(handler(event)): once per connection, before any registration.
Napi::Value ConnectionWrap::SetEventHandler(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) ThrowTypeError(env, "The \"handler\" argument must be a function");
  if (events_) ThrowTypeError(env, "this connection already has an event handler");
  events_ = std::make_unique<EventChannel>(env, info.This().As<Napi::Object>(), info[0].As<Napi::Function>());
  return env.Undefined();
}

namespace {

// A registration's outcome. Failure is carried as data rather than a false
// return so that the JS-thread side learns of it and stops counting it.
struct RegistrationOutcome {
  int callbackId = -1;
  std::optional<LibvirtErrorInfo> error;
};

}  // namespace

// registerDomainEvent(eventId) -> Promise<callbackId>; events go to the handler.
Napi::Value ConnectionWrap::RegisterDomainEvent(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) ThrowTypeError(env, "The \"eventId\" argument must be a number");
  int eventId = info[0].As<Napi::Number>().Int32Value();
  virConnectDomainEventGenericCallback callback = DomainEventCallbackFor(eventId);
  if (callback == nullptr) ThrowTypeError(env, "unsupported domain event id " + std::to_string(eventId));
  if (state_->closed) return RejectedPromise(env, ClosedConnectionError("virConnectDomainEventRegisterAny"));
  EventChannel& events = Events(env);
  std::shared_ptr<EventSink> sink = events.sink();
  events.RegistrationStarted();
  return Async<RegistrationOutcome>(
      info, "virConnectDomainEventRegisterAny",
      [eventId, callback, sink](virConnectPtr conn, RegistrationOutcome& out) {
        auto registration = std::make_unique<EventRegistration>(EventRegistration{sink});
        out.callbackId = virConnectDomainEventRegisterAny(conn, nullptr, eventId, callback, registration.get(),
                                                          FreeEventRegistration);
        if (out.callbackId < 0) {
          out.error = CaptureLastError("virConnectDomainEventRegisterAny");
        } else {
          static_cast<void>(registration.release());  // libvirt's now, until it calls FreeEventRegistration
        }
        return true;
      },
      [this](Napi::Env env, RegistrationOutcome outcome) -> Napi::Value {
        if (outcome.error) {
          events_->RegistrationFailed();
          throw MakeLibvirtError(env, *outcome.error);
        }
        events_->DomainEventRegistered(outcome.callbackId);
        return Napi::Number::New(env, outcome.callbackId);
      });
}

Napi::Value ConnectionWrap::DeregisterDomainEvent(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) ThrowTypeError(env, "The \"callbackId\" argument must be a number");
  int callbackId = info[0].As<Napi::Number>().Int32Value();
  if (events_ && !state_->closed) events_->DomainEventDeregistered(callbackId);
  return Async<int>(
      info, "virConnectDomainEventDeregisterAny",
      [callbackId](virConnectPtr conn, int&) { return virConnectDomainEventDeregisterAny(conn, callbackId) == 0; },
      UndefinedResult);
}

// registerCloseCallback() -> Promise<void>; the close event goes to the handler.
Napi::Value ConnectionWrap::RegisterCloseCallback(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (state_->closed) return RejectedPromise(env, ClosedConnectionError("virConnectRegisterCloseCallback"));
  EventChannel& events = Events(env);
  std::shared_ptr<EventSink> sink = events.sink();
  events.RegistrationStarted();
  return Async<RegistrationOutcome>(
      info, "virConnectRegisterCloseCallback",
      [sink](virConnectPtr conn, RegistrationOutcome& out) {
        auto registration = std::make_unique<EventRegistration>(EventRegistration{sink});
        if (virConnectRegisterCloseCallback(conn, OnConnectionClosed, registration.get(), FreeEventRegistration) < 0) {
          out.error = CaptureLastError("virConnectRegisterCloseCallback");
        } else {
          static_cast<void>(registration.release());  // libvirt's now, until it calls FreeEventRegistration
        }
        return true;
      },
      [this](Napi::Env env, RegistrationOutcome outcome) -> Napi::Value {
        if (outcome.error) {
          events_->RegistrationFailed();
          throw MakeLibvirtError(env, *outcome.error);
        }
        events_->CloseCallbackRegistered();
        return env.Undefined();
      });
}

Napi::Value ConnectionWrap::UnregisterCloseCallback(const Napi::CallbackInfo& info) {
  if (events_ && !state_->closed) events_->CloseCallbackUnregistered();
  return Async<int>(
      info, "virConnectUnregisterCloseCallback",
      [](virConnectPtr conn, int&) { return virConnectUnregisterCloseCallback(conn, OnConnectionClosed) == 0; },
      UndefinedResult);
}

// setKeepAlive(intervalSeconds, count): interval <= 0 disables keepalive.
Napi::Value ConnectionWrap::SetKeepAlive(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) {
    ThrowTypeError(env, "setKeepAlive(interval, count) takes two numbers");
  }
  int interval = info[0].As<Napi::Number>().Int32Value();
  unsigned int count = info[1].As<Napi::Number>().Uint32Value();
  return Async<int>(
      info, "virConnectSetKeepAlive",
      [interval, count](virConnectPtr conn, int& out) {
        out = virConnectSetKeepAlive(conn, interval, count);
        return out >= 0;
      },
      [](Napi::Env env, int result) -> Napi::Value {
        // 1: the driver has no keepalive (e.g. a local, in-process driver).
        return Napi::Boolean::New(env, result == 0);
      });
}

}  // namespace lvb
