// Lifetimes of wrapped libvirt handles.
//
// A connection's state is shared by the Connection wrapper and every child it
// produced. close() marks it closed and drops each child's libvirt reference, so
// the daemon connection really ends; work already queued holds references of its
// own and finishes safely. Releases that could reach the daemon never run on the
// JS thread: they go to one background thread.
#pragma once

#include <libvirt/libvirt.h>
#include <napi.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>

namespace lvb {

class ChildHandle {
 public:
  virtual ~ChildHandle() = default;
  // Drops the libvirt reference this child holds; later calls on it reject.
  virtual void ReleaseForClose() = 0;
};

struct ConnectionState {
  virConnectPtr ptr = nullptr;
  bool closed = false;
  std::unordered_set<ChildHandle*> children;
};

using ConnectionStatePtr = std::shared_ptr<ConnectionState>;

// Runs `release` on the background release thread (started on first use).
void ReleaseInBackground(std::function<void()> release);

// A libvirt reference taken on the JS thread for the duration of one async call,
// dropped on the worker thread when the call is done.
class HeldReference {
 public:
  HeldReference() = default;
  explicit HeldReference(virConnectPtr conn);
  explicit HeldReference(virDomainPtr dom);
  explicit HeldReference(virDomainCheckpointPtr cp);
  HeldReference(HeldReference&& other) noexcept;
  HeldReference& operator=(HeldReference&& other) noexcept;
  HeldReference(const HeldReference&) = delete;
  HeldReference& operator=(const HeldReference&) = delete;
  ~HeldReference();
  void Release();

 private:
  virConnectPtr conn_ = nullptr;
  virDomainPtr dom_ = nullptr;
  virDomainCheckpointPtr cp_ = nullptr;
};

// Method trampoline: checks that `this` really is a W (type tag) before
// unwrapping, so calling a method with a foreign `this` throws a TypeError
// instead of reinterpreting memory.
template <typename W, Napi::Value (W::*Method)(const Napi::CallbackInfo&)>
Napi::Value CallMethod(const Napi::CallbackInfo& info) {
  Napi::Value self = info.This();
  if (!self.IsObject() || !self.As<Napi::Object>().CheckTypeTag(&W::kTypeTag)) {
    throw Napi::TypeError::New(info.Env(), std::string("Illegal invocation: receiver is not a ") +
                                               W::kClassName);
  }
  W* wrap = W::Unwrap(self.As<Napi::Object>());
  if (wrap == nullptr) {
    throw Napi::TypeError::New(info.Env(), std::string("Illegal invocation: receiver is not a ") +
                                               W::kClassName);
  }
  return (wrap->*Method)(info);
}

template <typename W, Napi::Value (W::*Method)(const Napi::CallbackInfo&)>
Napi::PropertyDescriptor MethodProperty(Napi::Env env, const char* name) {
  return Napi::PropertyDescriptor::Value(name, Napi::Function::New(env, CallMethod<W, Method>, name),
                                         napi_default_method);
}

// Defines a class whose prototype methods go through CallMethod. (Class templates
// only take primitives as values, so the methods are added to the prototype after.)
template <typename W>
Napi::Function DefineCheckedClass(Napi::Env env, const std::initializer_list<Napi::PropertyDescriptor>& methods) {
  Napi::Function ctor = W::DefineClass(env, W::kClassName, {});
  ctor.Get("prototype").template As<Napi::Object>().DefineProperties(methods);
  return ctor;
}

// Argument readers: each throws a TypeError that names the argument.
std::string StringArg(const Napi::CallbackInfo& info, size_t index, const char* name);
std::optional<std::string> OptionalStringArg(const Napi::CallbackInfo& info, size_t index,
                                             const char* name);
unsigned int FlagsArg(const Napi::CallbackInfo& info, size_t index, const char* name = "flags");

}  // namespace lvb
