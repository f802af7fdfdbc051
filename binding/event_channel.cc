#include "event_channel.h"

#include <algorithm>
#include <mutex>
#include <string>

#include "domain.h"
#include "owned.h"
#include "typed_params.h"

namespace lvb {

namespace {

enum class EventKind { Lifecycle, BlockJob, JobCompleted, Reboot, Close };

const char* KindName(EventKind kind) {
  switch (kind) {
    case EventKind::Lifecycle:
      return "lifecycle";
    case EventKind::BlockJob:
      return "block-job";
    case EventKind::JobCompleted:
      return "job-completed";
    case EventKind::Reboot:
      return "reboot";
    case EventKind::Close:
      return "close";
  }
  return "unknown";
}

// One event, copied on libvirt's thread: nothing in it points into libvirt's memory.
struct EventRecord {
  EventKind kind = EventKind::Lifecycle;
  OwnedDomain domain;  // none for Close
  int first = 0;       // lifecycle event, block job type, close reason
  int second = 0;      // lifecycle detail, block job status
  std::string disk;
  TypedParams params;
};

void CallJs(Napi::Env env, Napi::Function handler, ChannelContext* context, EventRecord* data);

using EventFunction = Napi::TypedThreadSafeFunction<ChannelContext, EventRecord, CallJs>;

}  // namespace

class EventSink {
 public:
  explicit EventSink(EventFunction function) : function_(function) {}

  // Any thread (libvirt's event thread in practice).
  void Deliver(std::unique_ptr<EventRecord> record) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!open_) return;
    // Once queued, the record is the JS-thread callback's to free.
    if (function_.NonBlockingCall(record.get()) == napi_ok) static_cast<void>(record.release());
  }

  // JS thread: Node is about to free the function (finalizer, environment cleanup).
  void Close() {
    std::lock_guard<std::mutex> lock(mutex_);
    open_ = false;
  }

  // JS thread: the channel is done with the function; events already queued are
  // still delivered, then Node finalizes it.
  void Release() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!open_) return;
    open_ = false;
    function_.Release();
  }

  // JS thread. False once the function may be gone.
  bool IsOpen() {
    std::lock_guard<std::mutex> lock(mutex_);
    return open_;
  }

  // JS thread: whether the function keeps the event loop alive.
  void KeepLoopAlive(Napi::Env env, bool keep) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!open_) return;
    if (keep) {
      function_.Ref(env);
    } else {
      function_.Unref(env);
    }
  }

 private:
  std::mutex mutex_;
  EventFunction function_;
  bool open_ = true;
};

// The JS-thread side of a channel, owned by its thread-safe function.
struct ChannelContext {
  Napi::ObjectReference connection;  // strong only while registrations exist
  std::shared_ptr<EventSink> sink;
  bool cleanupHookRan = false;
};

namespace {

// Registered after the function, so it runs before the function's own cleanup
// (Node runs cleanup hooks in reverse order of registration).
void OnEnvironmentCleanup(void* arg) {
  auto* context = static_cast<ChannelContext*>(arg);
  context->cleanupHookRan = true;
  context->sink->Close();
}

void FinalizeChannel(Napi::Env env, void*, ChannelContext* context) {
  context->sink->Close();
  if (!context->cleanupHookRan) napi_remove_env_cleanup_hook(env, OnEnvironmentCleanup, context);
  delete context;
}

void CallJs(Napi::Env env, Napi::Function handler, ChannelContext* context, EventRecord* data) {
  std::unique_ptr<EventRecord> record(data);
  // No environment: the function is being finalized with events still queued.
  if (env == nullptr || record == nullptr) return;
  Napi::Value connection = context->connection.Value();
  if (connection.IsEmpty() || !connection.IsObject()) return;  // collected: nobody listens
  Napi::Object event = Napi::Object::New(env);
  event.Set("kind", KindName(record->kind));
  if (record->kind == EventKind::Close) {
    event.Set("reason", record->first);
  } else {
    try {
      event.Set("domain", DomainWrap::Wrap(env, connection.As<Napi::Object>(), std::move(record->domain)));
    } catch (const Napi::Error&) {
      return;  // the connection was closed: nobody to tell
    }
    switch (record->kind) {
      case EventKind::Lifecycle:
        event.Set("event", record->first);
        event.Set("detail", record->second);
        break;
      case EventKind::BlockJob:
        event.Set("disk", record->disk);
        event.Set("type", record->first);
        event.Set("status", record->second);
        break;
      case EventKind::JobCompleted:
        event.Set("params", TypedParamsToJS(env, record->params));
        break;
      default:
        break;
    }
  }
  handler.Call({event});
}

void Deliver(void* opaque, std::unique_ptr<EventRecord> record) {
  static_cast<EventRegistration*>(opaque)->sink->Deliver(std::move(record));
}

std::unique_ptr<EventRecord> DomainEvent(EventKind kind, virDomainPtr dom) {
  auto record = std::make_unique<EventRecord>();
  record->kind = kind;
  record->domain = ShareReference(dom);
  return record;
}

int OnLifecycle(virConnectPtr, virDomainPtr dom, int event, int detail, void* opaque) {
  auto record = DomainEvent(EventKind::Lifecycle, dom);
  record->first = event;
  record->second = detail;
  Deliver(opaque, std::move(record));
  return 0;
}

void OnBlockJob(virConnectPtr, virDomainPtr dom, const char* disk, int type, int status, void* opaque) {
  auto record = DomainEvent(EventKind::BlockJob, dom);
  record->disk = disk != nullptr ? disk : "";
  record->first = type;
  record->second = status;
  Deliver(opaque, std::move(record));
}

void OnJobCompleted(virConnectPtr, virDomainPtr dom, virTypedParameterPtr params, int count, void* opaque) {
  auto record = DomainEvent(EventKind::JobCompleted, dom);
  record->params = CopyTypedParams(params, count);
  Deliver(opaque, std::move(record));
}

void OnReboot(virConnectPtr, virDomainPtr dom, void* opaque) { Deliver(opaque, DomainEvent(EventKind::Reboot, dom)); }

}  // namespace

EventChannel::EventChannel(Napi::Env env, Napi::Object connection, Napi::Function handler) : env_(env) {
  context_ = new ChannelContext();
  context_->connection = Napi::Weak(connection);
  EventFunction function =
      EventFunction::New(env, handler, "libvirt events", 0, 1, context_, FinalizeChannel, static_cast<void*>(nullptr));
  sink_ = std::make_shared<EventSink>(function);
  context_->sink = sink_;
  napi_add_env_cleanup_hook(env, OnEnvironmentCleanup, context_);
  // Until something is registered, the channel must not keep the process alive.
  function.Unref(env);
}

EventChannel::~EventChannel() { sink_->Release(); }

void EventChannel::RegistrationStarted() {
  active_++;
  UpdateHold();
}

void EventChannel::RegistrationFailed() {
  if (active_ > 0) active_--;
  UpdateHold();
}

void EventChannel::DomainEventRegistered(int callbackId) {
  domainCallbackIds_.push_back(callbackId);
  domainEventsEverRegistered_ = true;
}

void EventChannel::DomainEventDeregistered(int callbackId) {
  auto it = std::find(domainCallbackIds_.begin(), domainCallbackIds_.end(), callbackId);
  if (it == domainCallbackIds_.end()) return;
  domainCallbackIds_.erase(it);
  RegistrationFailed();
}

void EventChannel::CloseCallbackRegistered() { closeCallbackRegistered_ = true; }

void EventChannel::CloseCallbackUnregistered() {
  if (!closeCallbackRegistered_) return;
  closeCallbackRegistered_ = false;
  RegistrationFailed();
}

void EventChannel::Shutdown() {
  domainCallbackIds_.clear();
  closeCallbackRegistered_ = false;
  active_ = 0;
  UpdateHold();
  sink_->Release();
}

void EventChannel::UpdateHold() {
  bool wanted = active_ > 0;
  // A closed sink means the function, and the context with it, may be gone.
  if (wanted == holding_ || !sink_->IsOpen()) return;
  holding_ = wanted;
  sink_->KeepLoopAlive(env_, wanted);
  if (wanted) {
    context_->connection.Ref();
  } else {
    context_->connection.Unref();
  }
}

virConnectDomainEventGenericCallback DomainEventCallbackFor(int eventId) {
  switch (eventId) {
    case VIR_DOMAIN_EVENT_ID_LIFECYCLE:
      return VIR_DOMAIN_EVENT_CALLBACK(OnLifecycle);
    case VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2:
      return VIR_DOMAIN_EVENT_CALLBACK(OnBlockJob);
    case VIR_DOMAIN_EVENT_ID_JOB_COMPLETED:
      return VIR_DOMAIN_EVENT_CALLBACK(OnJobCompleted);
    case VIR_DOMAIN_EVENT_ID_REBOOT:
      return VIR_DOMAIN_EVENT_CALLBACK(OnReboot);
    default:
      return nullptr;
  }
}

void OnConnectionClosed(virConnectPtr, int reason, void* opaque) {
  auto record = std::make_unique<EventRecord>();
  record->kind = EventKind::Close;
  record->first = reason;
  Deliver(opaque, std::move(record));
}

void FreeEventRegistration(void* opaque) { delete static_cast<EventRegistration*>(opaque); }

}  // namespace lvb
