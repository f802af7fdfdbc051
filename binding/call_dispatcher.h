// Where blocking libvirt calls run, and how their results get back to JS.
//
// Calls run on the addon's own threads, not libuv's pool: a daemon that hangs
// then stalls libvirt calls only, never fs or crypto work, and the threads can
// wait for work and hand results back far more cheaply than a pool shared with
// everything else (see call_dispatcher.cc).
#pragma once

#include <napi.h>

#include <memory>

namespace lvb {

class PendingCall {
 public:
  virtual ~PendingCall() = default;
  // On a call thread: the blocking libvirt work. Must not touch JS.
  virtual void Execute() = 0;
  // On the JS thread of the environment that submitted the call.
  virtual void Complete(Napi::Env env) = 0;

  // JS thread only: whether the call keeps its environment's event loop alive
  // until it completes (see DetachCall).
  bool countsInFlight = true;
};

struct CallTuning {
  // Most calls that run at once, over all environments of the process.
  int maxThreads = 16;
  // How long an idle call thread, and a JS thread with calls in flight, keep
  // polling for work before they sleep. 0 always sleeps (least CPU).
  int busyPollMicroseconds = 200;
};

// One environment's side of the dispatcher: where its finished calls wait for
// its JS thread.
class CallCompletions;

// Once per environment, from the addon's Init; the result lives in AddonData.
std::shared_ptr<CallCompletions> InitCallDispatcher(Napi::Env env);

// JS thread. Runs `call` on a call thread; its Complete runs later on this
// environment's JS thread, inside a callback scope (so microtasks run after).
// If the environment is torn down first, the call still runs but is never
// completed, nor freed: what it holds belongs to the dead environment.
// `lane` is the connection the call uses (nullptr for none): a connection's
// quick calls run one after another, see call_policy.h.
void SubmitCall(const std::shared_ptr<CallCompletions>& completions, const void* lane,
                std::unique_ptr<PendingCall> call);

// JS thread. `call`, submitted and not yet completed, stops keeping the event loop
// alive: a call its caller gave up on (a connection attempt past its timeout, still
// blocked in libvirt) must not keep the process from exiting. It still completes.
void DetachCall(const std::shared_ptr<CallCompletions>& completions, PendingCall* call);

// Any thread. Runs `message`'s Complete on the environment's JS thread, in order
// with the calls that finish after it; its Execute is never called, and it does not
// keep the event loop alive. False when the environment is gone: `message` is
// then left with the caller.
bool PostToJsThread(const std::shared_ptr<CallCompletions>& completions, std::unique_ptr<PendingCall>& message);

CallTuning GetCallTuning();
void SetCallTuning(const CallTuning& tuning);

}  // namespace lvb
