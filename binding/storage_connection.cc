#include "storage_connection.h"

#include <libvirt/libvirt.h>

#include <string>
#include <vector>

#include "connection.h"
#include "errors.h"
#include "storage_pool.h"
#include "stream.h"
#include "worker.h"

namespace lvb {

namespace {

using ConnectionMethod = Napi::Value (*)(const Napi::CallbackInfo& info, ConnectionWrap& connection);

// Like CallMethod (handles.h): a foreign `this` is a TypeError, never a reinterpretation.
template <ConnectionMethod Method>
Napi::Value OnConnection(const Napi::CallbackInfo& info) {
  Napi::Value self = info.This();
  ConnectionWrap* wrap = nullptr;
  if (self.IsObject() && self.As<Napi::Object>().CheckTypeTag(&ConnectionWrap::kTypeTag)) {
    wrap = ConnectionWrap::Unwrap(self.As<Napi::Object>());
  }
  if (wrap == nullptr) throw Napi::TypeError::New(info.Env(), "Illegal invocation: receiver is not a Connection");
  return Method(info, *wrap);
}

template <ConnectionMethod Method>
Napi::PropertyDescriptor Property(Napi::Env env, const char* name) {
  return Napi::PropertyDescriptor::Value(name, Napi::Function::New(env, OnConnection<Method>, name),
                                         napi_default_method);
}

// A call whose result is one pool handle, wrapped as a child of the connection.
Napi::Value AsyncPool(const Napi::CallbackInfo& info, ConnectionWrap& connection, const char* operation,
                      std::function<virStoragePoolPtr(virConnectPtr)> work) {
  const ConnectionStatePtr& state = connection.state();
  auto selfRef = std::make_shared<Napi::ObjectReference>(Napi::Persistent(info.This().As<Napi::Object>()));
  return QueueCall<OwnedStoragePool, virConnectPtr>(
      info, state, state->conn.get(), operation,
      [work = std::move(work)](virConnectPtr conn, OwnedStoragePool& out) {
        out.reset(work(conn));
        return out != nullptr;
      },
      [selfRef](Napi::Env env, OwnedStoragePool pool) -> Napi::Value {
        return StoragePoolWrap::Wrap(env, selfRef->Value(), std::move(pool));
      });
}

Napi::Value LookupStoragePoolByName(const Napi::CallbackInfo& info, ConnectionWrap& connection) {
  std::string name = StringArg(info, 0, "name");
  return AsyncPool(info, connection, "virStoragePoolLookupByName",
                   [name](virConnectPtr conn) { return virStoragePoolLookupByName(conn, name.c_str()); });
}

// A transient pool, started at once; it is gone once destroyed.
Napi::Value CreateStoragePool(const Napi::CallbackInfo& info, ConnectionWrap& connection) {
  std::string xml = StringArg(info, 0, "xml");
  unsigned int flags = FlagsArg(info, 1);
  return AsyncPool(info, connection, "virStoragePoolCreateXML",
                   [xml, flags](virConnectPtr conn) { return virStoragePoolCreateXML(conn, xml.c_str(), flags); });
}

Napi::Value DefineStoragePool(const Napi::CallbackInfo& info, ConnectionWrap& connection) {
  std::string xml = StringArg(info, 0, "xml");
  unsigned int flags = FlagsArg(info, 1);
  return AsyncPool(info, connection, "virStoragePoolDefineXML",
                   [xml, flags](virConnectPtr conn) { return virStoragePoolDefineXML(conn, xml.c_str(), flags); });
}

Napi::Value ListAllStoragePools(const Napi::CallbackInfo& info, ConnectionWrap& connection) {
  unsigned int flags = FlagsArg(info, 0);
  const ConnectionStatePtr& state = connection.state();
  auto selfRef = std::make_shared<Napi::ObjectReference>(Napi::Persistent(info.This().As<Napi::Object>()));
  return QueueCall<std::vector<OwnedStoragePool>, virConnectPtr>(
      info, state, state->conn.get(), "virConnectListAllStoragePools",
      [flags](virConnectPtr conn, std::vector<OwnedStoragePool>& out) {
        virStoragePoolPtr* pools = nullptr;
        int count = virConnectListAllStoragePools(conn, &pools, flags);
        if (count < 0) return false;
        out = AdoptList(pools, count);
        return true;
      },
      [selfRef](Napi::Env env, std::vector<OwnedStoragePool> pools) -> Napi::Value {
        Napi::Array result = Napi::Array::New(env, pools.size());
        for (size_t i = 0; i < pools.size(); i++) {
          result.Set(i, StoragePoolWrap::Wrap(env, selfRef->Value(), std::move(pools[i])));
        }
        return result;
      });
}

// newStream(flags): Stream, synchronously (virStreamNew involves no daemon).
Napi::Value NewStream(const Napi::CallbackInfo& info, ConnectionWrap&) {
  unsigned int flags = FlagsArg(info, 0);
  return StreamWrap::New(info.Env(), info.This().As<Napi::Object>(), flags);
}

}  // namespace

void InstallStorageMethods(Napi::Env env, Napi::Function connectionClass) {
  connectionClass.Get("prototype")
      .As<Napi::Object>()
      .DefineProperties({
          Property<LookupStoragePoolByName>(env, "lookupStoragePoolByName"),
          Property<CreateStoragePool>(env, "createStoragePool"),
          Property<DefineStoragePool>(env, "defineStoragePool"),
          Property<ListAllStoragePools>(env, "listAllStoragePools"),
          Property<NewStream>(env, "newStream"),
      });
}

}  // namespace lvb
