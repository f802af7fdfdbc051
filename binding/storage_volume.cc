#include "storage_volume.h"

#include "addon.h"
#include "errors.h"
#include "storage_pool.h"
#include "stream.h"
#include "worker.h"

namespace lvb {

const napi_type_tag StorageVolumeWrap::kTypeTag = {0x6c766276'6f6c756dULL, 0x65000000'00000007ULL};

Napi::Function StorageVolumeWrap::Init(Napi::Env env) {
  using W = StorageVolumeWrap;
  return DefineCheckedClass<W>(env, {
                                        MethodProperty<W, &W::GetName>(env, "getName"),
                                        MethodProperty<W, &W::GetKey>(env, "getKey"),
                                        MethodProperty<W, &W::GetPool>(env, "getPool"),
                                        MethodProperty<W, &W::GetPath>(env, "getPath"),
                                        MethodProperty<W, &W::GetInfo>(env, "getInfo"),
                                        MethodProperty<W, &W::GetXMLDesc>(env, "getXMLDesc"),
                                        MethodProperty<W, &W::Delete>(env, "delete"),
                                        MethodProperty<W, &W::Upload>(env, "upload"),
                                        MethodProperty<W, &W::Download>(env, "download"),
                                    });
}

Napi::Object StorageVolumeWrap::Wrap(Napi::Env env, Napi::Object pool, OwnedStorageVolume vol) {
  StoragePoolWrap* parent = StoragePoolWrap::Unwrap(pool);
  if (parent->state()->closed) throw MakeLibvirtError(env, ClosedConnectionError("virStorageVolLookup"));
  AddonData* data = env.GetInstanceData<AddonData>();
  return data->storageVolumeClass.New({OwnerArgument(env, vol), pool});
}

StorageVolumeWrap::StorageVolumeWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<StorageVolumeWrap>(info) {
  if (info.Length() < 2 || !info[0].IsExternal() || !info[1].IsObject() ||
      !info[1].As<Napi::Object>().CheckTypeTag(&StoragePoolWrap::kTypeTag)) {
    throw Napi::TypeError::New(info.Env(), "Illegal constructor: storage volumes come from a StoragePool");
  }
  Napi::Object pool = info[1].As<Napi::Object>();
  state_ = StoragePoolWrap::Unwrap(pool)->state();
  pool_ = Napi::Persistent(pool);
  ptr_ = std::move(*info[0].As<Napi::External<OwnedStorageVolume>>().Data());
  const char* name = virStorageVolGetName(ptr_.get());
  if (name != nullptr) name_ = name;
  const char* key = virStorageVolGetKey(ptr_.get());
  if (key != nullptr) key_ = key;
  info.This().As<Napi::Object>().TypeTag(&kTypeTag);
  // Last: a constructor that throws gets no destructor to take it out of the set again.
  state_->children.insert(this);
}

// ptr_'s owner hands the reference to the release thread: it may be the connection's last.
StorageVolumeWrap::~StorageVolumeWrap() { state_->children.erase(this); }

// The connection still holds its own reference here, so this one is not the last.
void StorageVolumeWrap::ReleaseForClose() { ReleaseHere(ptr_); }

template <typename T>
Napi::Value StorageVolumeWrap::Async(const Napi::CallbackInfo& info, const char* operation,
                                     std::function<bool(virStorageVolPtr, T&)> work,
                                     std::function<Napi::Value(Napi::Env, T)> convert) {
  return QueueCall<T>(info, state_, ptr_.get(), operation, std::move(work), std::move(convert));
}

Napi::Value StorageVolumeWrap::GetName(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), name_); }

Napi::Value StorageVolumeWrap::GetKey(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), key_); }

Napi::Value StorageVolumeWrap::GetPool(const Napi::CallbackInfo& info) { return pool_.Value(); }

Napi::Value StorageVolumeWrap::GetPath(const Napi::CallbackInfo& info) {
  return Async<std::string>(
      info, "virStorageVolGetPath",
      [](virStorageVolPtr vol, std::string& out) { return TakeCString(virStorageVolGetPath(vol), out); },
      [](Napi::Env env, const std::string& path) -> Napi::Value { return Napi::String::New(env, path); });
}

Napi::Value StorageVolumeWrap::GetInfo(const Napi::CallbackInfo& info) {
  return Async<virStorageVolInfo>(
      info, "virStorageVolGetInfo",
      [](virStorageVolPtr vol, virStorageVolInfo& out) { return virStorageVolGetInfo(vol, &out) == 0; },
      [](Napi::Env env, virStorageVolInfo vol) -> Napi::Value {
        Napi::Object result = Napi::Object::New(env);
        result.Set("type", vol.type);
        result.Set("capacity", Napi::Number::New(env, static_cast<double>(vol.capacity)));
        result.Set("allocation", Napi::Number::New(env, static_cast<double>(vol.allocation)));
        return result;
      });
}

Napi::Value StorageVolumeWrap::GetXMLDesc(const Napi::CallbackInfo& info) {
  unsigned int flags = FlagsArg(info, 0);
  return Async<std::string>(
      info, "virStorageVolGetXMLDesc",
      [flags](virStorageVolPtr vol, std::string& out) { return TakeCString(virStorageVolGetXMLDesc(vol, flags), out); },
      [](Napi::Env env, const std::string& xml) -> Napi::Value { return Napi::String::New(env, xml); });
}

Napi::Value StorageVolumeWrap::Delete(const Napi::CallbackInfo& info) {
  unsigned int flags = FlagsArg(info, 0);
  return Async<int>(
      info, "virStorageVolDelete", [flags](virStorageVolPtr vol, int&) { return virStorageVolDelete(vol, flags) == 0; },
      [](Napi::Env env, int) -> Napi::Value { return env.Undefined(); });
}

// upload(stream, offset, length, flags) and download(...): once resolved, the
// stream carries the volume's bytes; length 0 means up to the end of the volume.
Napi::Value StorageVolumeWrap::Upload(const Napi::CallbackInfo& info) {
  return Transfer(info, "virStorageVolUpload", virStorageVolUpload);
}

Napi::Value StorageVolumeWrap::Download(const Napi::CallbackInfo& info) {
  return Transfer(info, "virStorageVolDownload", virStorageVolDownload);
}

Napi::Value StorageVolumeWrap::Transfer(const Napi::CallbackInfo& info, const char* operation,
                                        int (*call)(virStorageVolPtr, virStreamPtr, unsigned long long,
                                                    unsigned long long, unsigned int)) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject() || !info[0].As<Napi::Object>().CheckTypeTag(&StreamWrap::kTypeTag)) {
    ThrowTypeError(env, "The \"stream\" argument must be a Stream from the volume's connection");
  }
  StreamWrap* stream = StreamWrap::Unwrap(info[0].As<Napi::Object>());
  uint64_t offset = ByteCountArg(info, 1, "offset");
  uint64_t length = ByteCountArg(info, 2, "length");
  unsigned int flags = FlagsArg(info, 3);
  if (stream->state() != state_) {
    ThrowTypeError(env, "The \"stream\" argument must be a Stream from the volume's connection");
  }
  StreamLifePtr life = stream->life();
  if (!life) return RejectedPromise(env, ClosedConnectionError(operation));
  return Async<int>(
      info, operation,
      [life, call, offset, length, flags](virStorageVolPtr vol, int&) {
        if (call(vol, life->st, offset, length, flags) < 0) return false;
        life->transferring.store(true);
        return true;
      },
      [](Napi::Env env, int) -> Napi::Value { return env.Undefined(); });
}

Napi::Value WrapVolumeList(Napi::Env env, Napi::Object pool, std::vector<OwnedStorageVolume> list) {
  Napi::Array result = Napi::Array::New(env, list.size());
  for (size_t i = 0; i < list.size(); i++) result.Set(i, StorageVolumeWrap::Wrap(env, pool, std::move(list[i])));
  return result;
}

}  // namespace lvb
