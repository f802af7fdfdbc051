#pragma once

#include <libvirt/libvirt.h>
#include <napi.h>

#include <memory>

#include "event_channel.h"
#include "handles.h"

namespace lvb {

class ConnectionWrap : public Napi::ObjectWrap<ConnectionWrap> {
 public:
  static constexpr const char* kClassName = "Connection";
  static const napi_type_tag kTypeTag;

  static Napi::Function Init(Napi::Env env);
  explicit ConnectionWrap(const Napi::CallbackInfo& info);
  ~ConnectionWrap() override;

  const ConnectionStatePtr& state() const { return state_; }

 private:
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value GetLibVersion(const Napi::CallbackInfo& info);
  Napi::Value GetVersion(const Napi::CallbackInfo& info);
  Napi::Value GetHostname(const Napi::CallbackInfo& info);
  Napi::Value GetURI(const Napi::CallbackInfo& info);
  Napi::Value GetCapabilities(const Napi::CallbackInfo& info);
  Napi::Value GetDomainCapabilities(const Napi::CallbackInfo& info);
  Napi::Value IsAlive(const Napi::CallbackInfo& info);
  Napi::Value IsClosed(const Napi::CallbackInfo& info);
  Napi::Value ListAllDomains(const Napi::CallbackInfo& info);
  Napi::Value LookupDomainByName(const Napi::CallbackInfo& info);
  Napi::Value LookupDomainByUUID(const Napi::CallbackInfo& info);
  Napi::Value DefineDomain(const Napi::CallbackInfo& info);
  Napi::Value CreateDomain(const Napi::CallbackInfo& info);
  Napi::Value SetEventHandler(const Napi::CallbackInfo& info);
  Napi::Value RegisterDomainEvent(const Napi::CallbackInfo& info);
  Napi::Value DeregisterDomainEvent(const Napi::CallbackInfo& info);
  Napi::Value RegisterCloseCallback(const Napi::CallbackInfo& info);
  Napi::Value UnregisterCloseCallback(const Napi::CallbackInfo& info);
  Napi::Value SetKeepAlive(const Napi::CallbackInfo& info);

  // Queues `work` with a connection reference held, or rejects when closed.
  template <typename T>
  Napi::Value Async(const Napi::CallbackInfo& info, const char* operation, std::function<bool(virConnectPtr, T&)> work,
                    std::function<Napi::Value(Napi::Env, T)> convert);
  // Async call whose result is one domain handle, wrapped as a child of this connection.
  Napi::Value AsyncDomain(const Napi::CallbackInfo& info, const char* operation,
                          std::function<virDomainPtr(virConnectPtr)> work);
  // The channel events go through; throws unless setEventHandler() made it.
  EventChannel& Events(Napi::Env env);
  // Marks the connection closed and drops its children's references (JS thread).
  void MarkClosed();

  ConnectionStatePtr state_;
  std::unique_ptr<EventChannel> events_;
};

}  // namespace lvb
