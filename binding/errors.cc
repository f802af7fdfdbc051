#include "errors.h"

#include "addon.h"

namespace lvb {

LibvirtErrorInfo CaptureLastError(const char* operation) {
  LibvirtErrorInfo info;
  virErrorPtr err = virGetLastError();
  if (err == nullptr || err->code == VIR_ERR_OK) {
    // Some calls fail without setting an error (e.g. an argument check in a driver
    // that returns -1 early); still say which call failed.
    info.code = VIR_ERR_INTERNAL_ERROR;
    info.domain = VIR_FROM_NONE;
    info.level = VIR_ERR_ERROR;
    info.message = std::string(operation) + " failed without a libvirt error message";
    return info;
  }
  info.code = err->code;
  info.domain = err->domain;
  info.level = err->level;
  info.message = err->message != nullptr ? err->message : std::string(operation) + " failed";
  if (err->str1 != nullptr) info.str1 = err->str1;
  if (err->str2 != nullptr) info.str2 = err->str2;
  if (err->str3 != nullptr) info.str3 = err->str3;
  info.int1 = err->int1;
  info.int2 = err->int2;
  virResetLastError();
  return info;
}

LibvirtErrorInfo ClosedConnectionError(const char* operation) {
  LibvirtErrorInfo info;
  info.code = VIR_ERR_INVALID_CONN;
  info.domain = VIR_FROM_NONE;
  info.level = VIR_ERR_ERROR;
  info.message = std::string(operation) + ": the connection is closed";
  return info;
}

Napi::Error MakeLibvirtError(Napi::Env env, const LibvirtErrorInfo& info) {
  Napi::Object props = Napi::Object::New(env);
  props.Set("code", info.code);
  props.Set("domain", info.domain);
  props.Set("level", info.level);
  props.Set("message", info.message);
  props.Set("str1", info.str1 ? Napi::Value(Napi::String::New(env, *info.str1)) : env.Null());
  props.Set("str2", info.str2 ? Napi::Value(Napi::String::New(env, *info.str2)) : env.Null());
  props.Set("str3", info.str3 ? Napi::Value(Napi::String::New(env, *info.str3)) : env.Null());
  props.Set("int1", info.int1);
  props.Set("int2", info.int2);

  AddonData* data = env.GetInstanceData<AddonData>();
  if (data != nullptr && !data->errorClass.IsEmpty()) {
    Napi::Object error = data->errorClass.New({props});
    return Napi::Error(env, error);
  }
  // The TS layer has not registered its class (addon used directly): a plain
  // Error still carries every field.
  Napi::Error error = Napi::Error::New(env, info.message);
  Napi::Object obj = error.Value();
  for (const auto& key : {"code", "domain", "level", "str1", "str2", "str3", "int1", "int2"}) {
    obj.Set(key, props.Get(key));
  }
  return error;
}

void ThrowTypeError(Napi::Env env, const std::string& message) {
  throw Napi::TypeError::New(env, message);
}

}  // namespace lvb
