// Test hook: a SpinGovernor (spin_governor.h) driven from JS, so its rules are
// tested without threads or timing (test/libvirt/spin-governor.test.ts).
#pragma once

#include <napi.h>

namespace lvb {

Napi::Function InitSpinGovernorProbe(Napi::Env env);

}  // namespace lvb
