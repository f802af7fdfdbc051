#include "addon.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <cstring>
#include <string>

#include "call_dispatcher.h"
#include "call_policy_probe.h"
#include "checkpoint.h"
#include "connection.h"
#include "connection_open.h"
#include "domain.h"
#include "errors.h"
#include "event_loop.h"
#include "exit_watchdog.h"
#include "file_lock.h"
#include "file_writer.h"
#include "huge_page_memory.h"
#include "spin_governor_probe.h"
#include "storage_connection.h"
#include "storage_pool.h"
#include "storage_volume.h"
#include "stream.h"
#include "tls_relay.h"
#include "typed_params.h"
#include "xxh128.h"
#include "zstd_clusters.h"

namespace lvb {

namespace {

// libvirt's default error handler prints every error to stderr; errors reach JS
// as LibvirtError instead.
void SilenceLibvirtErrors(void*, virErrorPtr) {}

Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsFunction()) {
    ThrowTypeError(info.Env(), "The \"errorClass\" argument must be a constructor");
  }
  info.Env().GetInstanceData<AddonData>()->errorClass = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

// The libvirt library version this process runs with (local, no daemon involved).
Napi::Value GetLibraryVersion(const Napi::CallbackInfo& info) {
  unsigned long version = 0;
  if (virGetVersion(&version, nullptr, nullptr) < 0) {
    throw MakeLibvirtError(info.Env(), CaptureLastError("virGetVersion"));
  }
  return Napi::Number::New(info.Env(), static_cast<double>(version));
}

// JS -> virTypedParameter array (built with libvirt's own virTypedParamsAdd*) -> JS.
// Exercises both directions of the converter that job stats and events use.
Napi::Value TypedParamsRoundTrip(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsObject()) ThrowTypeError(info.Env(), "The \"params\" argument must be an object");
  TypedParams params = TypedParamsFromJS(info.Env(), info[0].As<Napi::Object>());
  virTypedParameterPtr built = nullptr;
  int count = 0;
  if (!BuildTypedParams(params, &built, &count))
    throw MakeLibvirtError(info.Env(), CaptureLastError("virTypedParamsAdd"));
  TypedParams copied = CopyTypedParams(built, count);
  virTypedParamsFree(built, count);
  return TypedParamsToJS(info.Env(), copied);
}

Napi::Object CallTuningToJS(Napi::Env env, const CallTuning& tuning) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("maxThreads", tuning.maxThreads);
  out.Set("busyPollMicroseconds", tuning.busyPollMicroseconds);
  return out;
}

Napi::Value GetCallTuningJS(const Napi::CallbackInfo& info) { return CallTuningToJS(info.Env(), GetCallTuning()); }

// Range checks live in the TypeScript wrapper; this only refuses what would
// break the dispatcher.
Napi::Value SetCallTuningJS(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) ThrowTypeError(env, "The \"tuning\" argument must be an object");
  Napi::Object in = info[0].As<Napi::Object>();
  CallTuning tuning = GetCallTuning();
  auto read = [&](const char* key, int& out, int min) {
    Napi::Value value = in.Get(key);
    if (value.IsUndefined()) return;
    if (!value.IsNumber() || value.As<Napi::Number>().Int32Value() < min) {
      ThrowTypeError(env, std::string("The \"") + key + "\" setting must be an integer >= " + std::to_string(min));
    }
    out = value.As<Napi::Number>().Int32Value();
  };
  read("maxThreads", tuning.maxThreads, 1);
  read("busyPollMicroseconds", tuning.busyPollMicroseconds, 0);
  SetCallTuning(tuning);
  return CallTuningToJS(env, tuning);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  if (virInitialize() < 0) throw MakeLibvirtError(env, CaptureLastError("virInitialize"));
  virSetErrorFunc(nullptr, SilenceLibvirtErrors);
  if (int error = EnsureEventLoop(); error != 0) {
    throw Napi::Error::New(env, std::string("Cannot start the libvirt event loop: ") + std::strerror(error));
  }

  auto* data = new AddonData();
  env.SetInstanceData<AddonData>(data);
  data->calls = InitCallDispatcher(env);

  Napi::Function connection = ConnectionWrap::Init(env);
  Napi::Function domain = DomainWrap::Init(env);
  data->connectionClass = Napi::Persistent(connection);
  data->domainClass = Napi::Persistent(domain);
  Napi::Function checkpoint = CheckpointWrap::Init(env);
  data->checkpointClass = Napi::Persistent(checkpoint);
  InstallStorageMethods(env, connection);
  Napi::Function storagePool = StoragePoolWrap::Init(env);
  data->storagePoolClass = Napi::Persistent(storagePool);
  Napi::Function storageVolume = StorageVolumeWrap::Init(env);
  data->storageVolumeClass = Napi::Persistent(storageVolume);
  Napi::Function stream = StreamWrap::Init(env);
  data->streamClass = Napi::Persistent(stream);

  exports.Set("Connection", connection);
  exports.Set("Domain", domain);
  exports.Set("Checkpoint", checkpoint);
  exports.Set("StoragePool", storagePool);
  exports.Set("StorageVolume", storageVolume);
  exports.Set("Stream", stream);
  Napi::Function opening = InitConnectionOpening(env);
  data->openingClass = Napi::Persistent(opening);
  exports.Set("ConnectionOpening", opening);
  exports.Set("open", Napi::Function::New(env, OpenConnectionPromise, "open"));
  exports.Set("openConnection", Napi::Function::New(env, OpenConnection, "openConnection"));
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass, "setErrorClass"));
  exports.Set("typedParamsRoundTrip", Napi::Function::New(env, TypedParamsRoundTrip, "typedParamsRoundTrip"));
  exports.Set("getLibraryVersion", Napi::Function::New(env, GetLibraryVersion, "getLibraryVersion"));
  exports.Set("getCallTuning", Napi::Function::New(env, GetCallTuningJS, "getCallTuning"));
  exports.Set("setCallTuning", Napi::Function::New(env, SetCallTuningJS, "setCallTuning"));
  exports.Set("Xxh128", InitXxh128(env));
  exports.Set("FileWriter", InitFileWriter(env));
  exports.Set("zstdCompressClusters", Napi::Function::New(env, ZstdCompressClusters, "zstdCompressClusters"));
  exports.Set("zstdDecompressCluster", Napi::Function::New(env, ZstdDecompressCluster, "zstdDecompressCluster"));
  exports.Set("armExitWatchdog", Napi::Function::New(env, ArmExitWatchdog, "armExitWatchdog"));
  exports.Set("tryLockFile", Napi::Function::New(env, TryLockFile, "tryLockFile"));
  exports.Set("hugePageMemory", Napi::Function::New(env, HugePageMemory, "hugePageMemory"));
  exports.Set("startTlsRelay", Napi::Function::New(env, StartTlsRelay, "startTlsRelay"));
  exports.Set("CallPolicyProbe", InitCallPolicyProbe(env));
  exports.Set("SpinGovernorProbe", InitSpinGovernorProbe(env));
  return exports;
}

}  // namespace

}  // namespace lvb

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return lvb::Init(env, exports); }

NODE_API_MODULE(virt_backup, InitAddon)
