// Test hook: the dispatcher's CallPolicy (call_policy.h) driven from JS with a
// clock the test sets, so its rules are tested without threads or a daemon
// (test/call-policy.test.ts). Calls are numbers, lanes are numbers (0: none),
// times are microseconds.
#pragma once

#include <napi.h>

namespace lvb {

Napi::Function InitCallPolicyProbe(Napi::Env env);

}  // namespace lvb
