#include "call_policy_probe.h"

#include <cstdint>
#include <string>

#include "call_policy.h"
#include "errors.h"

namespace lvb {

namespace {

using Policy = CallPolicy<double>;
using Clock = Policy::Clock;

Clock::time_point TimeArg(const Napi::CallbackInfo& info, size_t index) {
  if (info.Length() <= index || !info[index].IsNumber())
    ThrowTypeError(info.Env(), "The \"now\" argument must be a number");
  return Clock::time_point(std::chrono::microseconds(info[index].As<Napi::Number>().Int64Value()));
}

const void* LaneArg(const Napi::CallbackInfo& info, size_t index) {
  if (info.Length() <= index || !info[index].IsNumber())
    ThrowTypeError(info.Env(), "The \"lane\" argument must be a number");
  // Lanes are opaque keys compared by address; the probe names them by number.
  return reinterpret_cast<const void*>(  // NOLINT(performance-no-int-to-ptr)
      static_cast<uintptr_t>(info[index].As<Napi::Number>().Int64Value()));
}

double Micros(Clock::time_point at) {
  return static_cast<double>(std::chrono::duration_cast<std::chrono::microseconds>(at.time_since_epoch()).count());
}

Napi::Object WakeToJS(Napi::Env env, const Policy::Wake& wake) {
  Napi::Object out = Napi::Object::New(env);
  switch (wake.kind) {
    case Policy::Wake::kNow:
      out.Set("wake", "now");
      break;
    case Policy::Wake::kAt:
      out.Set("wake", "at");
      out.Set("at", Micros(wake.at));
      break;
    default:
      out.Set("wake", "none");
      break;
  }
  return out;
}

class CallPolicyProbe : public Napi::ObjectWrap<CallPolicyProbe> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "CallPolicyProbe",
                       {
                           InstanceMethod<&CallPolicyProbe::Enqueue>("enqueue"),
                           InstanceMethod<&CallPolicyProbe::Take>("take"),
                           InstanceMethod<&CallPolicyProbe::Finished>("finished"),
                           InstanceMethod<&CallPolicyProbe::Queued>("queued"),
                       });
  }

  explicit CallPolicyProbe(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CallPolicyProbe>(info) {}

 private:
  // enqueue(call, lane, now) -> { wake: 'now' | 'at' | 'none', at? }
  Napi::Value Enqueue(const Napi::CallbackInfo& info) {
    if (info.Length() < 1 || !info[0].IsNumber()) ThrowTypeError(info.Env(), "The \"call\" argument must be a number");
    double call = info[0].As<Napi::Number>().DoubleValue();
    return WakeToJS(info.Env(), policy_.Enqueue(call, LaneArg(info, 1), TimeArg(info, 2)));
  }

  // take(now) -> { call, lane, runId, next, nextReady } | { call: null, nextReady }
  Napi::Value Take(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Clock::time_point nextReady;
    auto started = policy_.Take(TimeArg(info, 0), nextReady);
    Napi::Object out = Napi::Object::New(env);
    out.Set("nextReady", nextReady == Clock::time_point::max()
                             ? env.Null()
                             : Napi::Value(Napi::Number::New(env, Micros(nextReady))));
    if (!started) {
      out.Set("call", env.Null());
      return out;
    }
    out.Set("call", started->call);
    out.Set("lane", static_cast<double>(reinterpret_cast<uintptr_t>(started->lane)));
    out.Set("runId", static_cast<double>(started->runId));
    out.Set("next", WakeToJS(env, started->next));
    return out;
  }

  // finished(lane, runId, now)
  Napi::Value Finished(const Napi::CallbackInfo& info) {
    if (info.Length() < 2 || !info[1].IsNumber()) ThrowTypeError(info.Env(), "The \"runId\" argument must be a number");
    policy_.Finished(LaneArg(info, 0), static_cast<uint64_t>(info[1].As<Napi::Number>().Int64Value()),
                     TimeArg(info, 2));
    return info.Env().Undefined();
  }

  Napi::Value Queued(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(policy_.queued()));
  }

  Policy policy_;
};

}  // namespace

Napi::Function InitCallPolicyProbe(Napi::Env env) { return CallPolicyProbe::Init(env); }

}  // namespace lvb
