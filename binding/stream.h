// A libvirt stream (virStreamPtr): the data channel of a volume upload or download.
// Streams here are blocking: every send, receive, finish and abort runs on a call
// thread, one at a time per stream (the TypeScript layer queues them), so a slow
// daemon or network never blocks the JS thread.
#pragma once

#include <libvirt/libvirt.h>
#include <napi.h>

#include <atomic>
#include <memory>

#include "handles.h"

namespace lvb {

// The stream handle, shared by the wrapper and the calls in flight on it. Whoever
// drops it last hands it to the release thread, which aborts a transfer that was
// started and never finished (libvirt's side of it is then cleaned up) before it
// frees the stream: that may be a daemon round trip, and the stream's reference to
// its connection may be the connection's last.
struct StreamLife {
  explicit StreamLife(virStreamPtr stream) : st(stream) {}
  ~StreamLife();
  StreamLife(const StreamLife&) = delete;
  StreamLife& operator=(const StreamLife&) = delete;

  virStreamPtr st;
  // Set once an upload or download is attached; cleared by finish() and abort().
  std::atomic<bool> transferring{false};
};

using StreamLifePtr = std::shared_ptr<StreamLife>;

class StreamWrap : public Napi::ObjectWrap<StreamWrap>, public ChildHandle {
 public:
  static constexpr const char* kClassName = "Stream";
  static const napi_type_tag kTypeTag;

  static Napi::Function Init(Napi::Env env);
  // newStream(flags) on a Connection: virStreamNew is answered locally.
  static Napi::Value New(Napi::Env env, Napi::Object connection, unsigned int flags);

  explicit StreamWrap(const Napi::CallbackInfo& info);
  ~StreamWrap() override;

  void ReleaseForClose() override;
  const ConnectionStatePtr& state() const { return state_; }
  // Empty once the connection was closed.
  const StreamLifePtr& life() const { return life_; }

 private:
  Napi::Value Send(const Napi::CallbackInfo& info);
  Napi::Value SendHole(const Napi::CallbackInfo& info);
  Napi::Value Recv(const Napi::CallbackInfo& info);
  Napi::Value Finish(const Napi::CallbackInfo& info);
  Napi::Value Abort(const Napi::CallbackInfo& info);

  template <typename T>
  Napi::Value Async(const Napi::CallbackInfo& info, const char* operation, std::function<bool(StreamLife&, T&)> work,
                    std::function<Napi::Value(Napi::Env, T)> convert);

  StreamLifePtr life_;
  ConnectionStatePtr state_;
  Napi::ObjectReference connection_;
};

}  // namespace lvb
