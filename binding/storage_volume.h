// A libvirt storage volume (virStorageVolPtr), a child of the pool it came from.
#pragma once

#include <libvirt/libvirt.h>
#include <napi.h>

#include <string>
#include <vector>

#include "handles.h"

namespace lvb {

class StorageVolumeWrap : public Napi::ObjectWrap<StorageVolumeWrap>, public ChildHandle {
 public:
  static constexpr const char* kClassName = "StorageVolume";
  static const napi_type_tag kTypeTag;

  static Napi::Function Init(Napi::Env env);
  // Wraps `vol` as a child of the JS StoragePool `pool`; throws if the connection
  // was closed meanwhile (and `vol`'s owner frees it).
  static Napi::Object Wrap(Napi::Env env, Napi::Object pool, OwnedStorageVolume vol);

  explicit StorageVolumeWrap(const Napi::CallbackInfo& info);
  ~StorageVolumeWrap() override;

  void ReleaseForClose() override;

 private:
  Napi::Value GetName(const Napi::CallbackInfo& info);
  Napi::Value GetKey(const Napi::CallbackInfo& info);
  Napi::Value GetPool(const Napi::CallbackInfo& info);
  Napi::Value GetPath(const Napi::CallbackInfo& info);
  Napi::Value GetInfo(const Napi::CallbackInfo& info);
  Napi::Value GetXMLDesc(const Napi::CallbackInfo& info);
  Napi::Value Delete(const Napi::CallbackInfo& info);
  Napi::Value Upload(const Napi::CallbackInfo& info);
  Napi::Value Download(const Napi::CallbackInfo& info);

  // upload() and download(): attaches a Stream to the volume's data.
  Napi::Value Transfer(const Napi::CallbackInfo& info, const char* operation,
                       int (*call)(virStorageVolPtr, virStreamPtr, unsigned long long, unsigned long long,
                                   unsigned int));

  template <typename T>
  Napi::Value Async(const Napi::CallbackInfo& info, const char* operation,
                    std::function<bool(virStorageVolPtr, T&)> work, std::function<Napi::Value(Napi::Env, T)> convert);

  OwnedStorageVolume ptr_;
  ConnectionStatePtr state_;
  Napi::ObjectReference pool_;
  std::string name_;
  std::string key_;
};

// Wraps a list of volumes as children of `pool`; what it cannot wrap, the owners
// left in `list` free.
Napi::Value WrapVolumeList(Napi::Env env, Napi::Object pool, std::vector<OwnedStorageVolume> list);

}  // namespace lvb
