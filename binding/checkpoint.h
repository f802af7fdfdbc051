#pragma once

#include <libvirt/libvirt.h>
#include <napi.h>

#include <string>

#include "handles.h"

namespace lvb {

class CheckpointWrap : public Napi::ObjectWrap<CheckpointWrap>, public ChildHandle {
 public:
  static constexpr const char* kClassName = "Checkpoint";
  static const napi_type_tag kTypeTag;

  static Napi::Function Init(Napi::Env env);
  // Wraps `cp` (ownership taken) as a child of the JS Domain `domain`; frees it
  // and throws if the connection was closed meanwhile.
  static Napi::Object Wrap(Napi::Env env, Napi::Object domain, virDomainCheckpointPtr cp);

  explicit CheckpointWrap(const Napi::CallbackInfo& info);
  ~CheckpointWrap() override;

  void ReleaseForClose() override;

 private:
  Napi::Value GetName(const Napi::CallbackInfo& info);
  Napi::Value GetDomain(const Napi::CallbackInfo& info);
  Napi::Value GetXMLDesc(const Napi::CallbackInfo& info);
  Napi::Value GetParent(const Napi::CallbackInfo& info);
  Napi::Value ListAllChildren(const Napi::CallbackInfo& info);
  Napi::Value Delete(const Napi::CallbackInfo& info);

  template <typename T>
  Napi::Value Async(const Napi::CallbackInfo& info, const char* operation,
                    std::function<bool(virDomainCheckpointPtr, T&)> work,
                    std::function<Napi::Value(Napi::Env, T&)> convert);

  virDomainCheckpointPtr ptr_ = nullptr;
  ConnectionStatePtr state_;
  Napi::ObjectReference domain_;
  std::string name_;
};

// Wraps a list of checkpoints as children of `domain`; frees what it cannot wrap.
Napi::Value WrapCheckpointList(Napi::Env env, Napi::Object domain, std::vector<virDomainCheckpointPtr>& list);

}  // namespace lvb
