#include "storage_pool.h"

#include <array>
#include <vector>

#include "addon.h"
#include "connection.h"
#include "errors.h"
#include "storage_volume.h"
#include "worker.h"

namespace lvb {

const napi_type_tag StoragePoolWrap::kTypeTag = {0x6c766270'6f6f6c00ULL, 0x00000000'00000006ULL};

Napi::Function StoragePoolWrap::Init(Napi::Env env) {
  using W = StoragePoolWrap;
  return DefineCheckedClass<W>(env, {
                                        MethodProperty<W, &W::GetName>(env, "getName"),
                                        MethodProperty<W, &W::GetUUID>(env, "getUUIDString"),
                                        MethodProperty<W, &W::GetXMLDesc>(env, "getXMLDesc"),
                                        MethodProperty<W, &W::GetInfo>(env, "getInfo"),
                                        MethodProperty<W, &W::IsActive>(env, "isActive"),
                                        MethodProperty<W, &W::IsPersistent>(env, "isPersistent"),
                                        MethodProperty<W, &W::Refresh>(env, "refresh"),
                                        MethodProperty<W, &W::Start>(env, "start"),
                                        MethodProperty<W, &W::Destroy>(env, "destroy"),
                                        MethodProperty<W, &W::Undefine>(env, "undefine"),
                                        MethodProperty<W, &W::CreateVolume>(env, "createVolume"),
                                        MethodProperty<W, &W::LookupVolumeByName>(env, "lookupVolumeByName"),
                                        MethodProperty<W, &W::ListAllVolumes>(env, "listAllVolumes"),
                                    });
}

Napi::Object StoragePoolWrap::Wrap(Napi::Env env, Napi::Object connection, OwnedStoragePool pool) {
  ConnectionWrap* conn = ConnectionWrap::Unwrap(connection);
  if (conn->state()->closed) throw MakeLibvirtError(env, ClosedConnectionError("virStoragePoolLookup"));
  AddonData* data = env.GetInstanceData<AddonData>();
  return data->storagePoolClass.New({OwnerArgument(env, pool), connection});
}

StoragePoolWrap::StoragePoolWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<StoragePoolWrap>(info) {
  if (info.Length() < 2 || !info[0].IsExternal() || !info[1].IsObject() ||
      !info[1].As<Napi::Object>().CheckTypeTag(&ConnectionWrap::kTypeTag)) {
    throw Napi::TypeError::New(info.Env(), "Illegal constructor: storage pools come from a Connection");
  }
  Napi::Object connection = info[1].As<Napi::Object>();
  state_ = ConnectionWrap::Unwrap(connection)->state();
  connection_ = Napi::Persistent(connection);
  ptr_ = std::move(*info[0].As<Napi::External<OwnedStoragePool>>().Data());
  const char* name = virStoragePoolGetName(ptr_.get());
  if (name != nullptr) name_ = name;
  std::array<char, VIR_UUID_STRING_BUFLEN> uuid{};
  if (virStoragePoolGetUUIDString(ptr_.get(), uuid.data()) == 0) uuid_ = uuid.data();
  info.This().As<Napi::Object>().TypeTag(&kTypeTag);
  // Last: a constructor that throws gets no destructor to take it out of the set again.
  state_->children.insert(this);
}

// ptr_'s owner hands the reference to the release thread: it may be the connection's last.
StoragePoolWrap::~StoragePoolWrap() { state_->children.erase(this); }

// The connection still holds its own reference here, so this one is not the last.
void StoragePoolWrap::ReleaseForClose() { ReleaseHere(ptr_); }

template <typename T>
Napi::Value StoragePoolWrap::Async(const Napi::CallbackInfo& info, const char* operation,
                                   std::function<bool(virStoragePoolPtr, T&)> work,
                                   std::function<Napi::Value(Napi::Env, T)> convert) {
  return QueueCall<T>(info, state_, ptr_.get(), operation, std::move(work), std::move(convert));
}

Napi::Value StoragePoolWrap::AsyncStatus(const Napi::CallbackInfo& info, const char* operation,
                                         std::function<int(virStoragePoolPtr)> work) {
  return Async<int>(
      info, operation, [work = std::move(work)](virStoragePoolPtr pool, int&) { return work(pool) >= 0; },
      [](Napi::Env env, int) -> Napi::Value { return env.Undefined(); });
}

Napi::Value StoragePoolWrap::GetName(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), name_); }

Napi::Value StoragePoolWrap::GetUUID(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), uuid_); }

Napi::Value StoragePoolWrap::GetXMLDesc(const Napi::CallbackInfo& info) {
  unsigned int flags = FlagsArg(info, 0);
  return Async<std::string>(
      info, "virStoragePoolGetXMLDesc",
      [flags](virStoragePoolPtr pool, std::string& out) {
        return TakeCString(virStoragePoolGetXMLDesc(pool, flags), out);
      },
      [](Napi::Env env, const std::string& xml) -> Napi::Value { return Napi::String::New(env, xml); });
}

Napi::Value StoragePoolWrap::GetInfo(const Napi::CallbackInfo& info) {
  return Async<virStoragePoolInfo>(
      info, "virStoragePoolGetInfo",
      [](virStoragePoolPtr pool, virStoragePoolInfo& out) { return virStoragePoolGetInfo(pool, &out) == 0; },
      [](Napi::Env env, virStoragePoolInfo pool) -> Napi::Value {
        Napi::Object result = Napi::Object::New(env);
        result.Set("state", pool.state);
        result.Set("capacity", Napi::Number::New(env, static_cast<double>(pool.capacity)));
        result.Set("allocation", Napi::Number::New(env, static_cast<double>(pool.allocation)));
        result.Set("available", Napi::Number::New(env, static_cast<double>(pool.available)));
        return result;
      });
}

Napi::Value StoragePoolWrap::IsActive(const Napi::CallbackInfo& info) {
  return Async<int>(
      info, "virStoragePoolIsActive",
      [](virStoragePoolPtr pool, int& out) {
        out = virStoragePoolIsActive(pool);
        return out >= 0;
      },
      [](Napi::Env env, int active) -> Napi::Value { return Napi::Boolean::New(env, active == 1); });
}

Napi::Value StoragePoolWrap::IsPersistent(const Napi::CallbackInfo& info) {
  return Async<int>(
      info, "virStoragePoolIsPersistent",
      [](virStoragePoolPtr pool, int& out) {
        out = virStoragePoolIsPersistent(pool);
        return out >= 0;
      },
      [](Napi::Env env, int persistent) -> Napi::Value { return Napi::Boolean::New(env, persistent == 1); });
}

Napi::Value StoragePoolWrap::Refresh(const Napi::CallbackInfo& info) {
  unsigned int flags = FlagsArg(info, 0);
  return AsyncStatus(info, "virStoragePoolRefresh",
                     [flags](virStoragePoolPtr pool) { return virStoragePoolRefresh(pool, flags); });
}

Napi::Value StoragePoolWrap::Start(const Napi::CallbackInfo& info) {
  unsigned int flags = FlagsArg(info, 0);
  return AsyncStatus(info, "virStoragePoolCreate",
                     [flags](virStoragePoolPtr pool) { return virStoragePoolCreate(pool, flags); });
}

Napi::Value StoragePoolWrap::Destroy(const Napi::CallbackInfo& info) {
  return AsyncStatus(info, "virStoragePoolDestroy", [](virStoragePoolPtr pool) { return virStoragePoolDestroy(pool); });
}

Napi::Value StoragePoolWrap::Undefine(const Napi::CallbackInfo& info) {
  return AsyncStatus(info, "virStoragePoolUndefine",
                     [](virStoragePoolPtr pool) { return virStoragePoolUndefine(pool); });
}

Napi::Value StoragePoolWrap::CreateVolume(const Napi::CallbackInfo& info) {
  std::string xml = StringArg(info, 0, "xml");
  unsigned int flags = FlagsArg(info, 1);
  auto selfRef = std::make_shared<Napi::ObjectReference>(Napi::Persistent(info.This().As<Napi::Object>()));
  return Async<OwnedStorageVolume>(
      info, "virStorageVolCreateXML",
      [xml, flags](virStoragePoolPtr pool, OwnedStorageVolume& out) {
        out.reset(virStorageVolCreateXML(pool, xml.c_str(), flags));
        return out != nullptr;
      },
      [selfRef](Napi::Env env, OwnedStorageVolume vol) -> Napi::Value {
        return StorageVolumeWrap::Wrap(env, selfRef->Value(), std::move(vol));
      });
}

Napi::Value StoragePoolWrap::LookupVolumeByName(const Napi::CallbackInfo& info) {
  std::string name = StringArg(info, 0, "name");
  auto selfRef = std::make_shared<Napi::ObjectReference>(Napi::Persistent(info.This().As<Napi::Object>()));
  return Async<OwnedStorageVolume>(
      info, "virStorageVolLookupByName",
      [name](virStoragePoolPtr pool, OwnedStorageVolume& out) {
        out.reset(virStorageVolLookupByName(pool, name.c_str()));
        return out != nullptr;
      },
      [selfRef](Napi::Env env, OwnedStorageVolume vol) -> Napi::Value {
        return StorageVolumeWrap::Wrap(env, selfRef->Value(), std::move(vol));
      });
}

Napi::Value StoragePoolWrap::ListAllVolumes(const Napi::CallbackInfo& info) {
  unsigned int flags = FlagsArg(info, 0);
  auto selfRef = std::make_shared<Napi::ObjectReference>(Napi::Persistent(info.This().As<Napi::Object>()));
  return Async<std::vector<OwnedStorageVolume>>(
      info, "virStoragePoolListAllVolumes",
      [flags](virStoragePoolPtr pool, std::vector<OwnedStorageVolume>& out) {
        virStorageVolPtr* list = nullptr;
        int count = virStoragePoolListAllVolumes(pool, &list, flags);
        if (count < 0) return false;
        out = AdoptList(list, count);
        return true;
      },
      [selfRef](Napi::Env env, std::vector<OwnedStorageVolume> list) -> Napi::Value {
        return WrapVolumeList(env, selfRef->Value(), std::move(list));
      });
}

}  // namespace lvb
