// A libvirt storage pool (virStoragePoolPtr), a child of its connection.
#pragma once

#include <libvirt/libvirt.h>
#include <napi.h>

#include <string>

#include "handles.h"

namespace lvb {

class StoragePoolWrap : public Napi::ObjectWrap<StoragePoolWrap>, public ChildHandle {
 public:
  static constexpr const char* kClassName = "StoragePool";
  static const napi_type_tag kTypeTag;

  static Napi::Function Init(Napi::Env env);
  // Wraps `pool` as a child of the JS Connection `connection`; throws if the
  // connection was closed meanwhile (and `pool`'s owner frees it).
  static Napi::Object Wrap(Napi::Env env, Napi::Object connection, OwnedStoragePool pool);

  explicit StoragePoolWrap(const Napi::CallbackInfo& info);
  ~StoragePoolWrap() override;

  void ReleaseForClose() override;
  const ConnectionStatePtr& state() const { return state_; }

 private:
  Napi::Value GetName(const Napi::CallbackInfo& info);
  Napi::Value GetUUID(const Napi::CallbackInfo& info);
  Napi::Value GetXMLDesc(const Napi::CallbackInfo& info);
  Napi::Value GetInfo(const Napi::CallbackInfo& info);
  Napi::Value IsActive(const Napi::CallbackInfo& info);
  Napi::Value IsPersistent(const Napi::CallbackInfo& info);
  Napi::Value Refresh(const Napi::CallbackInfo& info);
  Napi::Value Start(const Napi::CallbackInfo& info);
  Napi::Value Destroy(const Napi::CallbackInfo& info);
  Napi::Value Undefine(const Napi::CallbackInfo& info);
  Napi::Value CreateVolume(const Napi::CallbackInfo& info);
  Napi::Value LookupVolumeByName(const Napi::CallbackInfo& info);
  Napi::Value ListAllVolumes(const Napi::CallbackInfo& info);

  template <typename T>
  Napi::Value Async(const Napi::CallbackInfo& info, const char* operation,
                    std::function<bool(virStoragePoolPtr, T&)> work, std::function<Napi::Value(Napi::Env, T)> convert);
  Napi::Value AsyncStatus(const Napi::CallbackInfo& info, const char* operation,
                          std::function<int(virStoragePoolPtr)> work);

  OwnedStoragePool ptr_;
  ConnectionStatePtr state_;
  Napi::ObjectReference connection_;
  std::string name_;
  std::string uuid_;
};

}  // namespace lvb
