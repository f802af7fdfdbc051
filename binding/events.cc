#include "events.h"

#include <string>

#include "domain.h"
#include "typed_params.h"

namespace lvb {

namespace {

struct EventData {
  int eventId = -1;  // -1: connection closed
  virDomainPtr dom = nullptr;
  int a = 0;
  int b = 0;
  int c = 0;
  std::string text;
  TypedParams params;
};

struct EventContext {
  Napi::ObjectReference connection;
};

void CallJs(Napi::Env env, Napi::Function callback, EventContext* context, EventData* data);

using EventFunction = Napi::TypedThreadSafeFunction<EventContext, EventData, CallJs>;

}  // namespace

struct EventRegistration {
  EventFunction tsfn;
};

namespace {

Napi::Object Payload(Napi::Env env, const EventData& data) {
  Napi::Object payload = Napi::Object::New(env);
  switch (data.eventId) {
    case VIR_DOMAIN_EVENT_ID_LIFECYCLE:
      payload.Set("event", data.a);
      payload.Set("detail", data.b);
      break;
    case VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2:
      payload.Set("disk", data.text);
      payload.Set("type", data.a);
      payload.Set("status", data.b);
      break;
    case VIR_DOMAIN_EVENT_ID_JOB_COMPLETED:
      payload.Set("params", TypedParamsToJS(env, data.params));
      break;
    case VIR_DOMAIN_EVENT_ID_REBOOT:
      break;
    default:
      break;
  }
  return payload;
}

void CallJs(Napi::Env env, Napi::Function callback, EventContext* context, EventData* data) {
  std::unique_ptr<EventData> owned(data);
  if (env == nullptr || data == nullptr) {
    // Teardown: the function is being finalized with events still queued.
    if (data != nullptr && data->dom != nullptr) ReleaseInBackground([dom = data->dom] { virDomainFree(dom); });
    return;
  }
  if (data->eventId == -1) {
    callback.Call({Napi::Number::New(env, data->a)});
    return;
  }
  virDomainPtr dom = data->dom;
  data->dom = nullptr;
  Napi::Object domain;
  try {
    domain = DomainWrap::Wrap(env, context->connection.Value(), dom);
  } catch (const Napi::Error&) {
    return;  // the connection was closed: nobody to tell
  }
  callback.Call({domain, Payload(env, *data)});
}

void Finalize(Napi::Env, void*, EventContext* context) { delete context; }

EventRegistration* NewRegistration(Napi::Env env, Napi::Object connection, Napi::Function callback,
                                   const char* name) {
  auto* context = new EventContext{Napi::Persistent(connection)};
  auto* registration = new EventRegistration();
  registration->tsfn = EventFunction::New(env, callback, name, 0, 1, context, Finalize, static_cast<void*>(nullptr));
  return registration;
}

void Deliver(void* opaque, EventData* data) {
  auto* registration = static_cast<EventRegistration*>(opaque);
  if (registration->tsfn.NonBlockingCall(data) != napi_ok) {
    if (data->dom != nullptr) virDomainFree(data->dom);
    delete data;
  }
}

EventData* DomainEvent(int eventId, virDomainPtr dom) {
  auto* data = new EventData();
  data->eventId = eventId;
  data->dom = dom;
  virDomainRef(dom);
  return data;
}

int OnLifecycle(virConnectPtr, virDomainPtr dom, int event, int detail, void* opaque) {
  EventData* data = DomainEvent(VIR_DOMAIN_EVENT_ID_LIFECYCLE, dom);
  data->a = event;
  data->b = detail;
  Deliver(opaque, data);
  return 0;
}

void OnBlockJob(virConnectPtr, virDomainPtr dom, const char* disk, int type, int status, void* opaque) {
  EventData* data = DomainEvent(VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2, dom);
  data->text = disk != nullptr ? disk : "";
  data->a = type;
  data->b = status;
  Deliver(opaque, data);
}

void OnJobCompleted(virConnectPtr, virDomainPtr dom, virTypedParameterPtr params, int count, void* opaque) {
  EventData* data = DomainEvent(VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, dom);
  data->params = CopyTypedParams(params, count);
  Deliver(opaque, data);
}

void OnReboot(virConnectPtr, virDomainPtr dom, void* opaque) {
  Deliver(opaque, DomainEvent(VIR_DOMAIN_EVENT_ID_REBOOT, dom));
}

}  // namespace

virConnectDomainEventGenericCallback DomainEventCallbackFor(int eventId) {
  switch (eventId) {
    case VIR_DOMAIN_EVENT_ID_LIFECYCLE: return VIR_DOMAIN_EVENT_CALLBACK(OnLifecycle);
    case VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2: return VIR_DOMAIN_EVENT_CALLBACK(OnBlockJob);
    case VIR_DOMAIN_EVENT_ID_JOB_COMPLETED: return VIR_DOMAIN_EVENT_CALLBACK(OnJobCompleted);
    case VIR_DOMAIN_EVENT_ID_REBOOT: return VIR_DOMAIN_EVENT_CALLBACK(OnReboot);
    default: return nullptr;
  }
}

EventRegistration* NewDomainEventRegistration(Napi::Env env, Napi::Object connection, int eventId,
                                              Napi::Function callback) {
  return NewRegistration(env, connection, callback, "libvirt domain event");
}

EventRegistration* NewCloseRegistration(Napi::Env env, Napi::Object connection, Napi::Function callback) {
  return NewRegistration(env, connection, callback, "libvirt close callback");
}

void OnConnectionClosed(virConnectPtr, int reason, void* opaque) {
  auto* data = new EventData();
  data->eventId = -1;
  data->a = reason;
  Deliver(opaque, data);
}

void FreeEventRegistration(void* opaque) {
  auto* registration = static_cast<EventRegistration*>(opaque);
  registration->tsfn.Release();
  delete registration;
}

}  // namespace lvb
