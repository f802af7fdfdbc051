// Lifetimes of wrapped libvirt handles.
//
// A connection's state is shared by the Connection wrapper and every child it
// produced. close() marks it closed and drops each child's libvirt reference, so
// the daemon connection really ends; work already queued holds references of its
// own, and close() waits for it before dropping the connection's own reference.
#pragma once

#include <libvirt/libvirt.h>
#include <napi.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <unordered_set>

#include "owned.h"

namespace lvb {

class ChildHandle {
 public:
  virtual ~ChildHandle() = default;
  // Drops the libvirt reference this child holds; later calls on it reject.
  virtual void ReleaseForClose() = 0;
};

struct ConnectionState {
  OwnedConnection conn;  // empty once closed
  bool closed = false;
  std::unordered_set<ChildHandle*> children;

  // JS thread. Calls queued on the connection or on its children that have not
  // completed yet; close() starts its own work only once there are none.
  void CallStarted() { callsInFlight_++; }
  void CallEnded();
  // Runs `next` once no call is in flight (at once when none is).
  void WhenIdle(std::function<void()> next);
  int callsInFlight() const { return callsInFlight_; }

 private:
  int callsInFlight_ = 0;
  std::function<void()> whenIdle_;
};

using ConnectionStatePtr = std::shared_ptr<ConnectionState>;

// A libvirt reference taken on the JS thread for the duration of one async call,
// dropped on the call thread when the call is done (Release). If the work never
// ran (environment teardown), the owners hand it to the release thread instead.
class HeldReference {
 public:
  HeldReference() = default;
  explicit HeldReference(virConnectPtr conn) : conn_(ShareReference(conn)) {}
  explicit HeldReference(virDomainPtr dom) : dom_(ShareReference(dom)) {}
  explicit HeldReference(virDomainCheckpointPtr cp) : cp_(ShareReference(cp)) {}
  explicit HeldReference(virStoragePoolPtr pool) : pool_(ShareReference(pool)) {}
  explicit HeldReference(virStorageVolPtr vol) : vol_(ShareReference(vol)) {}
  explicit HeldReference(OwnedConnection conn) : conn_(std::move(conn)) {}

  void Release() {
    ReleaseHere(vol_);
    ReleaseHere(pool_);
    ReleaseHere(cp_);
    ReleaseHere(dom_);
    ReleaseHere(conn_);
  }

 private:
  OwnedConnection conn_;
  OwnedDomain dom_;
  OwnedCheckpoint cp_;
  OwnedStoragePool pool_;
  OwnedStorageVolume vol_;
};

// Method trampoline: checks that `this` really is a W (type tag) before
// unwrapping, so calling a method with a foreign `this` throws a TypeError
// instead of reinterpreting memory.
template <typename W, Napi::Value (W::*Method)(const Napi::CallbackInfo&)>
Napi::Value CallMethod(const Napi::CallbackInfo& info) {
  Napi::Value self = info.This();
  if (!self.IsObject() || !self.As<Napi::Object>().CheckTypeTag(&W::kTypeTag)) {
    throw Napi::TypeError::New(info.Env(), std::string("Illegal invocation: receiver is not a ") + W::kClassName);
  }
  W* wrap = W::Unwrap(self.As<Napi::Object>());
  if (wrap == nullptr) {
    throw Napi::TypeError::New(info.Env(), std::string("Illegal invocation: receiver is not a ") + W::kClassName);
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

// Wrapped classes are constructed from C++ only, with the owner of their
// handle passed as an External (which JS code cannot forge). The constructor
// moves the handle out; if construction fails first, the owner still frees it.
template <typename Object>
Napi::External<Owned<Object>> OwnerArgument(Napi::Env env, Owned<Object>& owner) {
  return Napi::External<Owned<Object>>::New(env, &owner);
}

// Argument readers: each throws a TypeError that names the argument.
std::string StringArg(const Napi::CallbackInfo& info, size_t index, const char* name);
std::optional<std::string> OptionalStringArg(const Napi::CallbackInfo& info, size_t index, const char* name);
unsigned int FlagsArg(const Napi::CallbackInfo& info, size_t index, const char* name = "flags");
// A byte count or offset: a whole number from 0 to 2^53 - 1 (undefined reads as 0).
uint64_t ByteCountArg(const Napi::CallbackInfo& info, size_t index, const char* name);

}  // namespace lvb
