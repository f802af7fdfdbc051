#include "errors.h"

#include "addon.h"

namespace lvb {

LibvirtErrorInfo CaptureLastError(const char* operation) {
  LibvirtErrorInfo info;
  info.operation = operation;
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
  info.operation = operation;
  info.code = VIR_ERR_INVALID_CONN;
  info.domain = VIR_FROM_NONE;
  info.level = VIR_ERR_ERROR;
  info.message = std::string(operation) + ": the connection is closed";
  return info;
}

namespace {

// libvirt's messages rarely say which call failed ("Domain not found: ..."), and
// the same message can come from several calls: name it unless it is there.
std::string MessageNamingOperation(const LibvirtErrorInfo& info) {
  if (info.operation.empty() || info.message.find(info.operation) != std::string::npos) return info.message;
  return info.message + " (" + info.operation + ")";
}

}  // namespace

Napi::Error MakeLibvirtError(Napi::Env env, const LibvirtErrorInfo& info) {
  Napi::Object props = Napi::Object::New(env);
  props.Set("code", info.code);
  props.Set("domain", info.domain);
  props.Set("level", info.level);
  props.Set("message", MessageNamingOperation(info));
  props.Set("operation", info.operation.empty() ? env.Null() : Napi::Value(Napi::String::New(env, info.operation)));
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
  Napi::Error error = Napi::Error::New(env, MessageNamingOperation(info));
  Napi::Object obj = error.Value();
  for (const auto& key : {"code", "domain", "level", "operation", "str1", "str2", "str3", "int1", "int2"}) {
    obj.Set(key, props.Get(key));
  }
  return error;
}

Napi::ObjectReference CaptureCallSite(Napi::Env env) {
  // V8 records the frames when the Error is made and formats them only when
  // `stack` is read, which happens for failed calls only.
  return Napi::Persistent(Napi::Error::New(env, "").Value());
}

void AttachCallSite(Napi::Env env, Napi::Value error, const Napi::ObjectReference& callSite) {
  if (!error.IsObject() || callSite.IsEmpty()) return;
  Napi::Value siteStack = callSite.Value().Get("stack");
  if (!siteStack.IsString()) return;
  std::string frames = siteStack.As<Napi::String>().Utf8Value();
  size_t firstFrame = frames.find('\n');
  if (firstFrame == std::string::npos) return;
  std::string header = error.ToString().Utf8Value();
  error.As<Napi::Object>().Set("stack", header + frames.substr(firstFrame));
}

namespace {

// The rejection handler of WithCallers: runs as a promise reaction, so a new
// Error made here carries the awaiting async functions as "at async" frames.
Napi::Value AttachAwaitingCallers(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Value error = info[0];
  if (error.IsObject()) {
    Napi::Value siteStack = Napi::Error::New(env, "").Value().Get("stack");
    if (siteStack.IsString()) {
      std::string frames = siteStack.As<Napi::String>().Utf8Value();
      size_t firstFrame = frames.find('\n');
      if (firstFrame != std::string::npos) {
        std::string header = error.ToString().Utf8Value();
        error.As<Napi::Object>().Set("stack", header + frames.substr(firstFrame));
      }
    }
  }
  throw Napi::Error(env, error);
}

}  // namespace

Napi::Value WithCallers(Napi::Env env, Napi::Promise promise) {
  AddonData* data = env.GetInstanceData<AddonData>();
  if (data->attachCallers.IsEmpty()) {
    data->attachCallers = Napi::Persistent(Napi::Function::New(env, AttachAwaitingCallers, "attachCallers"));
  }
  Napi::Function then = promise.Get("then").As<Napi::Function>();
  return then.Call(promise, {env.Undefined(), data->attachCallers.Value()});
}

void ThrowTypeError(Napi::Env env, const std::string& message) { throw Napi::TypeError::New(env, message); }

}  // namespace lvb
