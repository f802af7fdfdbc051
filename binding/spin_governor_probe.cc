#include "spin_governor_probe.h"

#include "errors.h"
#include "spin_governor.h"

namespace lvb {

namespace {

class SpinGovernorProbe : public Napi::ObjectWrap<SpinGovernorProbe> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "SpinGovernorProbe",
                       {
                           InstanceMethod<&SpinGovernorProbe::Window>("window"),
                           InstanceMethod<&SpinGovernorProbe::Found>("found"),
                           InstanceMethod<&SpinGovernorProbe::RanOut>("ranOut"),
                           InstanceMethod<&SpinGovernorProbe::Contended>("contended"),
                       });
  }

  explicit SpinGovernorProbe(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SpinGovernorProbe>(info) {}

 private:
  // window(setting) -> microseconds the next wait may poll
  Napi::Value Window(const Napi::CallbackInfo& info) {
    if (info.Length() < 1 || !info[0].IsNumber())
      ThrowTypeError(info.Env(), "The \"setting\" argument must be a number");
    return Napi::Number::New(info.Env(), governor_.Window(info[0].As<Napi::Number>().Int32Value()));
  }

  Napi::Value Found(const Napi::CallbackInfo& info) {
    governor_.Found();
    return info.Env().Undefined();
  }

  Napi::Value RanOut(const Napi::CallbackInfo& info) {
    governor_.RanOut();
    return info.Env().Undefined();
  }

  Napi::Value Contended(const Napi::CallbackInfo& info) {
    governor_.Contended();
    return info.Env().Undefined();
  }

  SpinGovernor governor_;
};

}  // namespace

Napi::Function InitSpinGovernorProbe(Napi::Env env) { return SpinGovernorProbe::Init(env); }

}  // namespace lvb
