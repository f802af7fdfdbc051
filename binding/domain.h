#pragma once

#include <libvirt/libvirt.h>
#include <napi.h>

#include <string>

#include "handles.h"

namespace lvb {

class DomainWrap : public Napi::ObjectWrap<DomainWrap>, public ChildHandle {
 public:
  static constexpr const char* kClassName = "Domain";
  static const napi_type_tag kTypeTag;

  static Napi::Function Init(Napi::Env env);
  // Wraps `dom` as a child of `connection`. If the connection was closed
  // meanwhile, throws (and `dom`'s owner frees it).
  static Napi::Object Wrap(Napi::Env env, Napi::Object connection, OwnedDomain dom);

  explicit DomainWrap(const Napi::CallbackInfo& info);
  ~DomainWrap() override;

  void ReleaseForClose() override;
  const ConnectionStatePtr& state() const { return state_; }

 private:
  Napi::Value GetName(const Napi::CallbackInfo& info);
  Napi::Value GetUUID(const Napi::CallbackInfo& info);
  Napi::Value GetId(const Napi::CallbackInfo& info);
  Napi::Value GetXMLDesc(const Napi::CallbackInfo& info);
  Napi::Value GetState(const Napi::CallbackInfo& info);
  Napi::Value IsActive(const Napi::CallbackInfo& info);
  Napi::Value IsPersistent(const Napi::CallbackInfo& info);
  Napi::Value Start(const Napi::CallbackInfo& info);
  Napi::Value Shutdown(const Napi::CallbackInfo& info);
  Napi::Value Destroy(const Napi::CallbackInfo& info);
  Napi::Value Undefine(const Napi::CallbackInfo& info);
  Napi::Value QemuMonitorCommand(const Napi::CallbackInfo& info);
  Napi::Value CreateCheckpoint(const Napi::CallbackInfo& info);
  Napi::Value ListAllCheckpoints(const Napi::CallbackInfo& info);
  Napi::Value LookupCheckpointByName(const Napi::CallbackInfo& info);
  Napi::Value BackupBegin(const Napi::CallbackInfo& info);
  Napi::Value BackupGetXMLDesc(const Napi::CallbackInfo& info);
  Napi::Value AbortJob(const Napi::CallbackInfo& info);
  Napi::Value GetJobInfo(const Napi::CallbackInfo& info);
  Napi::Value GetJobStats(const Napi::CallbackInfo& info);
  Napi::Value BlockCopy(const Napi::CallbackInfo& info);
  Napi::Value BlockJobAbort(const Napi::CallbackInfo& info);
  Napi::Value GetBlockJobInfo(const Napi::CallbackInfo& info);
  Napi::Value BlockJobSetSpeed(const Napi::CallbackInfo& info);
  Napi::Value FSFreeze(const Napi::CallbackInfo& info);
  Napi::Value FSThaw(const Napi::CallbackInfo& info);
  Napi::Value GetFSInfo(const Napi::CallbackInfo& info);
  Napi::Value FSFreezeOrThaw(const Napi::CallbackInfo& info, const char* operation,
                             int (*call)(virDomainPtr, const char**, unsigned int, unsigned int));

  template <typename T>
  Napi::Value Async(const Napi::CallbackInfo& info, const char* operation, std::function<bool(virDomainPtr, T&)> work,
                    std::function<Napi::Value(Napi::Env, T)> convert);
  // Async call that returns an int status (>= 0 is success) and resolves undefined.
  Napi::Value AsyncStatus(const Napi::CallbackInfo& info, const char* operation, std::function<int(virDomainPtr)> work);

  OwnedDomain ptr_;
  ConnectionStatePtr state_;
  Napi::ObjectReference connection_;
  std::string name_;
  std::string uuid_;
};

}  // namespace lvb
