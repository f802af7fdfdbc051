// One async libvirt call: `work` runs on a call thread (call_dispatcher.h) and
// must not touch JS; `convert` receives the result (with the owners of any
// handles in it) on the JS thread and builds the JS value. A false return from
// `work` means libvirt failed, and the thread's last error is captured right there.
#pragma once

#include <napi.h>

#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "addon.h"
#include "call_dispatcher.h"
#include "errors.h"
#include "handles.h"

namespace lvb {

template <typename T>
class LibvirtCall final : public PendingCall {
 public:
  using Work = std::function<bool(T&)>;
  using Convert = std::function<Napi::Value(Napi::Env, T)>;

  // JS thread. `owner` is the JS object the call was made on: kept alive until the
  // call ends.
  // `counted`: the connection whose calls in flight this one counts among.
  static std::unique_ptr<LibvirtCall> Prepare(Napi::Env env, Napi::Object owner, const char* operation,
                                              HeldReference held, Work work, Convert convert,
                                              ConnectionStatePtr counted = nullptr) {
    std::unique_ptr<LibvirtCall> call(new LibvirtCall(env, owner, operation, std::move(held), std::move(work),
                                                      std::move(convert), std::move(counted)));
    if (call->counted_) call->counted_->CallStarted();
    return call;
  }

  // JS thread. `lane` is the connection's state (nullptr for calls that have none).
  static void Submit(Napi::Env env, const void* lane, std::unique_ptr<LibvirtCall> call) {
    SubmitCall(env.GetInstanceData<AddonData>()->calls, lane, std::move(call));
  }

  // JS thread. The call's promise, whose rejection names the async functions
  // awaiting it (see WithCallers).
  static Napi::Value Run(Napi::Env env, Napi::Object owner, const void* lane, const char* operation, HeldReference held,
                         Work work, Convert convert, ConnectionStatePtr counted = nullptr) {
    std::unique_ptr<LibvirtCall> call =
        Prepare(env, owner, operation, std::move(held), std::move(work), std::move(convert), std::move(counted));
    Napi::Promise promise = call->Promise();
    Submit(env, lane, std::move(call));
    return WithCallers(env, promise);
  }

  // The bare promise, without the callers' frames on failure: see Run.
  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      ok_ = work_(result_);
      if (!ok_) error_ = CaptureLastError(operation_);
    } catch (const std::exception& e) {
      ok_ = false;
      failure_ = e.what();
    }
    // Dropping the reference here keeps a possible final virConnectClose (a daemon
    // round trip) off the JS thread.
    held_.Release();
  }

  void Complete(Napi::Env env) override {
    // While a worker thread's environment is torn down, any JS call may fail:
    // there is nobody left to tell, so such failures are dropped, never thrown
    // out of the completion callback.
    try {
      if (!failure_.empty()) {
        Reject(env, Napi::Error::New(env, std::string(operation_) + ": " + failure_).Value());
      } else if (!ok_) {
        Reject(env, MakeLibvirtError(env, error_).Value());
      } else {
        try {
          deferred_.Resolve(convert_(env, std::move(result_)));
        } catch (const Napi::Error& e) {
          Reject(env, e.Value());
        }
      }
    } catch (const Napi::Error&) {
    }
    if (counted_) counted_->CallEnded();
  }

 private:
  LibvirtCall(Napi::Env env, Napi::Object owner, const char* operation, HeldReference held, Work work, Convert convert,
              ConnectionStatePtr counted)
      : deferred_(Napi::Promise::Deferred::New(env)),
        owner_(Napi::Persistent(owner)),
        operation_(operation),
        held_(std::move(held)),
        work_(std::move(work)),
        convert_(std::move(convert)),
        counted_(std::move(counted)) {}

  void Reject(Napi::Env, Napi::Value error) { deferred_.Reject(error); }

  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference owner_;
  const char* operation_;
  HeldReference held_;
  Work work_;
  Convert convert_;
  ConnectionStatePtr counted_;
  T result_{};
  bool ok_ = false;
  LibvirtErrorInfo error_;
  std::string failure_;  // a C++ exception thrown by `work`
};

// A promise already rejected with a LibvirtError (e.g. the connection is closed).
inline Napi::Promise RejectedPromise(Napi::Env env, const LibvirtErrorInfo& info) {
  auto deferred = Napi::Promise::Deferred::New(env);
  deferred.Reject(MakeLibvirtError(env, info).Value());
  return deferred.Promise();
}

// Moves a string libvirt allocated into `out`; false when libvirt returned NULL
// (which means it failed and set its last error).
inline bool TakeCString(char* str, std::string& out) {
  if (str == nullptr) return false;
  out.assign(str);
  free(str);
  return true;
}

// Queues `work` on `handle` (a connection, domain or checkpoint pointer) with a
// reference held for the call, or rejects at once when the connection is closed.
// The one entry point every wrapped class's methods go through.
template <typename T, typename Handle>
Napi::Value QueueCall(const Napi::CallbackInfo& info, const ConnectionStatePtr& state, Handle handle,
                      const char* operation, std::function<bool(Handle, T&)> work,
                      std::function<Napi::Value(Napi::Env, T)> convert) {
  Napi::Env env = info.Env();
  if (state->closed || handle == nullptr) return RejectedPromise(env, ClosedConnectionError(operation));
  return LibvirtCall<T>::Run(
      env, info.This().As<Napi::Object>(), state.get(), operation, HeldReference(handle),
      [handle, work = std::move(work)](T& out) { return work(handle, out); }, std::move(convert), state);
}

}  // namespace lvb
