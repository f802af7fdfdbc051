#include "connection.h"

#include <libvirt/virterror.h>

#include <vector>

#include "addon.h"
#include "domain.h"
#include "errors.h"
#include "events.h"
#include "worker.h"

namespace lvb {

const napi_type_tag ConnectionWrap::kTypeTag = {0x6c766263'6f6e6e65ULL, 0x6374696f'6e000001ULL};

Napi::Function ConnectionWrap::Init(Napi::Env env) {
  using W = ConnectionWrap;
  return DefineCheckedClass<W>(env,
                     {
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
                         MethodProperty<W, &W::RegisterDomainEvent>(env, "registerDomainEvent"),
                         MethodProperty<W, &W::DeregisterDomainEvent>(env, "deregisterDomainEvent"),
                         MethodProperty<W, &W::RegisterCloseCallback>(env, "registerCloseCallback"),
                         MethodProperty<W, &W::UnregisterCloseCallback>(env, "unregisterCloseCallback"),
                         MethodProperty<W, &W::SetKeepAlive>(env, "setKeepAlive"),
                     });
}

ConnectionWrap::ConnectionWrap(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<ConnectionWrap>(info), state_(std::make_shared<ConnectionState>()) {
  // Only Open() constructs connections: it passes the handle as an External, which
  // JS code cannot forge.
  if (info.Length() < 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(info.Env(), "Illegal constructor: use connect()");
  }
  state_->ptr = info[0].As<Napi::External<virConnect>>().Data();
  info.This().As<Napi::Object>().TypeTag(&kTypeTag);
}

ConnectionWrap::~ConnectionWrap() {
  if (state_->closed || state_->ptr == nullptr) return;
  state_->closed = true;
  for (ChildHandle* child : state_->children) child->ReleaseForClose();
  state_->children.clear();
  virConnectPtr conn = state_->ptr;
  state_->ptr = nullptr;
  ReleaseInBackground([conn] { virConnectClose(conn); });
}

Napi::Value ConnectionWrap::Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::optional<std::string> uri = OptionalStringArg(info, 0, "uri");
  unsigned int flags = FlagsArg(info, 1);
  return LibvirtCall<virConnectPtr>::Run(
      env, Napi::Object::New(env), nullptr, "virConnectOpenAuth", HeldReference(),
      [uri, flags](virConnectPtr& out) {
        // No auth callbacks: a prompt on the daemon's behalf would block a worker
        // thread on stdin. Servers that need credentials fail with libvirt's message.
        out = virConnectOpenAuth(uri ? uri->c_str() : nullptr, nullptr, flags);
        return out != nullptr;
      },
      [](Napi::Env env, virConnectPtr& conn) -> Napi::Value {
        AddonData* data = env.GetInstanceData<AddonData>();
        Napi::Value wrapped = data->connectionClass.New({Napi::External<virConnect>::New(env, conn)});
        conn = nullptr;
        return wrapped;
      });
}

template <typename T>
Napi::Value ConnectionWrap::Async(const Napi::CallbackInfo& info, const char* operation,
                                  std::function<bool(virConnectPtr, T&)> work,
                                  std::function<Napi::Value(Napi::Env, T&)> convert) {
  return QueueCall<T>(info, state_, state_->ptr, operation, std::move(work), std::move(convert));
}

namespace {

Napi::Value StringResult(Napi::Env env, std::string& value) { return Napi::String::New(env, value); }

Napi::Value NumberResult(Napi::Env env, unsigned long& value) {
  return Napi::Number::New(env, static_cast<double>(value));
}

}  // namespace

Napi::Value ConnectionWrap::AsyncDomain(const Napi::CallbackInfo& info, const char* operation,
                                        std::function<virDomainPtr(virConnectPtr)> work) {
  Napi::Object self = info.This().As<Napi::Object>();
  auto selfRef = std::make_shared<Napi::ObjectReference>(Napi::Persistent(self));
  return Async<virDomainPtr>(
      info, operation,
      [work = std::move(work)](virConnectPtr conn, virDomainPtr& out) {
        out = work(conn);
        return out != nullptr;
      },
      [selfRef](Napi::Env env, virDomainPtr& dom) -> Napi::Value {
        virDomainPtr owned = dom;
        dom = nullptr;
        return DomainWrap::Wrap(env, selfRef->Value(), owned);
      });
}

Napi::Value ConnectionWrap::Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto deferred = Napi::Promise::Deferred::New(env);
  if (state_->closed) {
    deferred.Resolve(env.Undefined());
    return deferred.Promise();
  }
  state_->closed = true;
  for (ChildHandle* child : state_->children) child->ReleaseForClose();
  state_->children.clear();
  virConnectPtr conn = state_->ptr;
  state_->ptr = nullptr;
  // The wrapper's own reference is moved into the worker, which drops it off the
  // JS thread; calls still in flight hold theirs, so the daemon connection ends
  // when the last of them finishes.
  return LibvirtCall<int>::Run(
      env, info.This().As<Napi::Object>(), nullptr, "virConnectClose", HeldReference(),
      [conn](int& remaining) {
        remaining = virConnectClose(conn);
        return remaining >= 0;
      },
      [](Napi::Env env, int&) -> Napi::Value { return env.Undefined(); });
}

Napi::Value ConnectionWrap::GetLibVersion(const Napi::CallbackInfo& info) {
  return Async<unsigned long>(
      info, "virConnectGetLibVersion",
      [](virConnectPtr conn, unsigned long& out) { return virConnectGetLibVersion(conn, &out) == 0; },
      NumberResult);
}

Napi::Value ConnectionWrap::GetVersion(const Napi::CallbackInfo& info) {
  return Async<unsigned long>(
      info, "virConnectGetVersion",
      [](virConnectPtr conn, unsigned long& out) { return virConnectGetVersion(conn, &out) == 0; },
      NumberResult);
}

Napi::Value ConnectionWrap::GetHostname(const Napi::CallbackInfo& info) {
  return Async<std::string>(
      info, "virConnectGetHostname",
      [](virConnectPtr conn, std::string& out) { return TakeCString(virConnectGetHostname(conn), out); },
      StringResult);
}

Napi::Value ConnectionWrap::GetURI(const Napi::CallbackInfo& info) {
  return Async<std::string>(
      info, "virConnectGetURI",
      [](virConnectPtr conn, std::string& out) { return TakeCString(virConnectGetURI(conn), out); },
      StringResult);
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
        return TakeCString(virConnectGetDomainCapabilities(conn, cstr(emulator), cstr(arch), cstr(machine),
                                                           cstr(virttype), flags),
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
      [](Napi::Env env, int& alive) -> Napi::Value { return Napi::Boolean::New(env, alive == 1); });
}

Napi::Value ConnectionWrap::IsClosed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), state_->closed);
}

Napi::Value ConnectionWrap::ListAllDomains(const Napi::CallbackInfo& info) {
  unsigned int flags = FlagsArg(info, 0);
  Napi::Object self = info.This().As<Napi::Object>();
  auto selfRef = std::make_shared<Napi::ObjectReference>(Napi::Persistent(self));
  return Async<std::vector<virDomainPtr>>(
      info, "virConnectListAllDomains",
      [flags](virConnectPtr conn, std::vector<virDomainPtr>& out) {
        virDomainPtr* doms = nullptr;
        int count = virConnectListAllDomains(conn, &doms, flags);
        if (count < 0) return false;
        out.assign(doms, doms + count);
        free(doms);
        return true;
      },
      [selfRef](Napi::Env env, std::vector<virDomainPtr>& doms) -> Napi::Value {
        Napi::Array result = Napi::Array::New(env, doms.size());
        for (size_t i = 0; i < doms.size(); i++) {
          virDomainPtr owned = doms[i];
          doms[i] = nullptr;
          try {
            result.Set(i, DomainWrap::Wrap(env, selfRef->Value(), owned));
          } catch (...) {
            for (size_t j = i + 1; j < doms.size(); j++) ReleaseInBackground([dom = doms[j]] { virDomainFree(dom); });
            doms.clear();
            throw;
          }
        }
        doms.clear();
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
  return AsyncDomain(info, "virDomainDefineXMLFlags", [xml, flags](virConnectPtr conn) {
    return virDomainDefineXMLFlags(conn, xml.c_str(), flags);
  });
}

Napi::Value ConnectionWrap::CreateDomain(const Napi::CallbackInfo& info) {
  std::string xml = StringArg(info, 0, "xml");
  unsigned int flags = FlagsArg(info, 1);
  return AsyncDomain(info, "virDomainCreateXML",
                     [xml, flags](virConnectPtr conn) { return virDomainCreateXML(conn, xml.c_str(), flags); });
}

namespace {

// A registration handed to libvirt: on failure libvirt never calls the free
// callback, so it is freed here.
struct PendingRegistration {
  EventRegistration* registration = nullptr;
  int callbackId = -1;
};

}  // namespace

// registerDomainEvent(eventId, callback(domain, payload)) -> Promise<callbackId>
Napi::Value ConnectionWrap::RegisterDomainEvent(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) ThrowTypeError(env, "The \"eventId\" argument must be a number");
  int eventId = info[0].As<Napi::Number>().Int32Value();
  if (info.Length() < 2 || !info[1].IsFunction()) ThrowTypeError(env, "The \"callback\" argument must be a function");
  virConnectDomainEventGenericCallback callback = DomainEventCallbackFor(eventId);
  if (callback == nullptr) ThrowTypeError(env, "unsupported domain event id " + std::to_string(eventId));
  if (state_->closed) return RejectedPromise(env, ClosedConnectionError("virConnectDomainEventRegisterAny"));
  EventRegistration* registration =
      NewDomainEventRegistration(env, info.This().As<Napi::Object>(), eventId, info[1].As<Napi::Function>());
  return Async<PendingRegistration>(
      info, "virConnectDomainEventRegisterAny",
      [eventId, callback, registration](virConnectPtr conn, PendingRegistration& out) {
        out.registration = registration;
        out.callbackId =
            virConnectDomainEventRegisterAny(conn, nullptr, eventId, callback, registration, FreeEventRegistration);
        if (out.callbackId < 0) {
          FreeEventRegistration(registration);
          return false;
        }
        return true;
      },
      [](Napi::Env env, PendingRegistration& done) -> Napi::Value { return Napi::Number::New(env, done.callbackId); });
}

Napi::Value ConnectionWrap::DeregisterDomainEvent(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) ThrowTypeError(env, "The \"callbackId\" argument must be a number");
  int callbackId = info[0].As<Napi::Number>().Int32Value();
  return Async<int>(
      info, "virConnectDomainEventDeregisterAny",
      [callbackId](virConnectPtr conn, int&) { return virConnectDomainEventDeregisterAny(conn, callbackId) == 0; },
      [](Napi::Env env, int&) -> Napi::Value { return env.Undefined(); });
}

// registerCloseCallback(callback(reason)) -> Promise<void>
Napi::Value ConnectionWrap::RegisterCloseCallback(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) ThrowTypeError(env, "The \"callback\" argument must be a function");
  if (state_->closed) return RejectedPromise(env, ClosedConnectionError("virConnectRegisterCloseCallback"));
  EventRegistration* registration =
      NewCloseRegistration(env, info.This().As<Napi::Object>(), info[0].As<Napi::Function>());
  return Async<int>(
      info, "virConnectRegisterCloseCallback",
      [registration](virConnectPtr conn, int&) {
        if (virConnectRegisterCloseCallback(conn, OnConnectionClosed, registration, FreeEventRegistration) < 0) {
          FreeEventRegistration(registration);
          return false;
        }
        return true;
      },
      [](Napi::Env env, int&) -> Napi::Value { return env.Undefined(); });
}

Napi::Value ConnectionWrap::UnregisterCloseCallback(const Napi::CallbackInfo& info) {
  return Async<int>(
      info, "virConnectUnregisterCloseCallback",
      [](virConnectPtr conn, int&) { return virConnectUnregisterCloseCallback(conn, OnConnectionClosed) == 0; },
      [](Napi::Env env, int&) -> Napi::Value { return env.Undefined(); });
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
      [](Napi::Env env, int& result) -> Napi::Value {
        // 1: the driver has no keepalive (e.g. a local, in-process driver).
        return Napi::Boolean::New(env, result == 0);
      });
}

}  // namespace lvb
