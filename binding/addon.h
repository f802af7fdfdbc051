// Per-environment state: each worker_thread that loads the addon gets its own
// constructors and error class, so the addon is context-aware.
#pragma once

#include <napi.h>

#include <memory>

#include "call_dispatcher.h"

namespace lvb {

struct AddonData {
  Napi::FunctionReference errorClass;
  Napi::FunctionReference connectionClass;
  Napi::FunctionReference openingClass;
  Napi::FunctionReference domainClass;
  Napi::FunctionReference checkpointClass;
  Napi::FunctionReference storagePoolClass;
  Napi::FunctionReference storageVolumeClass;
  Napi::FunctionReference streamClass;
  Napi::FunctionReference attachCallers;  // see WithCallers (errors.h)
  std::shared_ptr<CallCompletions> calls;
};

}  // namespace lvb
