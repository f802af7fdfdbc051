#pragma once

#include <libvirt/libvirt.h>
#include <napi.h>

#include <string>
#include <vector>

#include "handles.h"

namespace lvb {

class CheckpointWrap : public Napi::ObjectWrap<CheckpointWrap>, public ChildHandle {
 public:
  static constexpr const char* kClassName = "Checkpoint";
  static const napi_type_tag kTypeTag;

  static Napi::Function Init(Napi::Env env);
  // Wraps `cp` as a child of the JS Domain `domain`; throws if the connection was
  // closed meanwhile (and `cp`'s owner frees it).
  static Napi::Object Wrap(Napi::Env env, Napi::Object domain, OwnedCheckpoint cp);

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
                    std::function<Napi::Value(Napi::Env, T)> convert);

  OwnedCheckpoint ptr_;
  ConnectionStatePtr state_;
  Napi::ObjectReference domain_;
  std::string name_;
};

// Wraps a list of checkpoints as children of `domain`; what it cannot wrap, the
// owners left in `list` free.
Napi::Value WrapCheckpointList(Napi::Env env, Napi::Object domain, std::vector<OwnedCheckpoint> list);

}  // namespace lvb
