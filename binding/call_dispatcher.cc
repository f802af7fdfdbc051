#include "call_dispatcher.h"

#include <node_api.h>
#include <pthread.h>
#include <sched.h>
#include <uv.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "call_policy.h"
#include "spin_governor.h"

namespace lvb {

// Why the polling: a libvirt round trip here is 100-150 µs, and a thread that
// sleeps between calls has to be woken for each one. Waking a sleeping thread
// costs tens of microseconds (far more on virtual machines, where an idle vCPU
// halts), and a call through a pool costs two such wake-ups on top of the
// round trip: one to start the worker, one to get the result back to the JS
// thread. So an idle call thread keeps looking for work for a short while
// before it sleeps (one thread at a time), and the JS thread, while it has
// calls in flight, keeps its loop turning (a uv_idle handle: timers and I/O
// still run) instead of sleeping until the result is signalled. Both stop
// after busyPollMicroseconds without activity, so a long call costs at most
// that much spinning, and setting it to 0 restores plain sleeping. And each
// polling site asks its SpinGovernor (spin_governor.h) first: polling stops where
// it does not pay, and at once while other work wants the cores.

namespace {

using Clock = std::chrono::steady_clock;

std::atomic<int> maxThreadsSetting{CallTuning{}.maxThreads};
std::atomic<int> busyPollSetting{CallTuning{}.busyPollMicroseconds};

}  // namespace

// The JS-thread side of one environment: finished calls wait here until the
// environment's loop picks them up.
class CallCompletions : public std::enable_shared_from_this<CallCompletions> {
 public:
  explicit CallCompletions(napi_env env) : env_(env) {}

  void Start() {
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(env_, &loop);
    uv_async_init(loop, &signal_, [](uv_async_t* handle) { static_cast<CallCompletions*>(handle->data)->Drain(); });
    signal_.data = this;
    uv_unref(reinterpret_cast<uv_handle_t*>(&signal_));
    uv_idle_init(loop, &poll_);
    poll_.data = this;
    napi_value resource = nullptr;
    napi_value name = nullptr;
    napi_create_object(env_, &resource);
    napi_create_string_utf8(env_, "libvirt-backup:call", NAPI_AUTO_LENGTH, &name);
    napi_async_init(env_, resource, name, &context_);
    // Held by the environment until its cleanup hook has closed both handles.
    self_ = shared_from_this();
    napi_add_async_cleanup_hook(
        env_,
        [](napi_async_cleanup_hook_handle hook, void* arg) { static_cast<CallCompletions*>(arg)->Shutdown(hook); },
        this, nullptr);
  }

  // JS thread.
  void Submitted() {
    if (inFlight_++ == 0) uv_ref(reinterpret_cast<uv_handle_t*>(&signal_));
    lastActivity_ = Clock::now();
    if (polling_.load(std::memory_order_relaxed)) return;
    int window = governor_.Window(busyPollSetting.load(std::memory_order_relaxed));
    if (window <= 0) return;
    pollWindow_ = std::chrono::microseconds(window);
    polling_.store(true);
    uv_idle_start(&poll_, [](uv_idle_t* handle) { static_cast<CallCompletions*>(handle->data)->Poll(); });
  }

  // Call thread. Returns false once the environment is gone: the call is then
  // left alone, since freeing it would touch the dead environment's handles.
  bool Finished(std::unique_ptr<PendingCall> call) {
    if (!Deliver(call)) {
      static_cast<void>(call.release());
      return false;
    }
    return true;
  }

  // Any thread. A message for the JS thread, not counted in flight.
  bool Post(std::unique_ptr<PendingCall>& message) {
    message->countsInFlight = false;
    return Deliver(message);
  }

  // JS thread.
  void Detach(PendingCall* call) {
    if (!call->countsInFlight) return;
    call->countsInFlight = false;
    if (--inFlight_ == 0) uv_unref(reinterpret_cast<uv_handle_t*>(&signal_));
  }

 private:
  // Queues `call` for the JS thread; false (leaving it with the caller) once the
  // environment is gone.
  bool Deliver(std::unique_ptr<PendingCall>& call) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (closed_) return false;
      done_.push_back(std::move(call));
      doneCount_.fetch_add(1);
      // While the JS thread polls it will see the call without being signalled.
      // polling_ is cleared before the JS thread's last look (seq_cst on both
      // sides), so a call is never stranded between the two. Sent under the
      // lock so the handle cannot be closed meanwhile.
      if (!polling_.load()) uv_async_send(&signal_);
    }
    return true;
  }

  void Poll() {
    if (doneCount_.load() > 0) {
      governor_.Found();
      Drain();
      return;
    }
    if (inFlight_ == 0 || Clock::now() - lastActivity_ > pollWindow_) {
      if (inFlight_ > 0) governor_.RanOut();
      StopPolling();
      return;
    }
    // Lets a thread this one waits for run if it shares the core.
    Clock::time_point before = Clock::now();
    sched_yield();
    if (SpinGovernor::LostTheCore(before, Clock::now())) {
      governor_.Contended();
      StopPolling();
    }
  }

  void StopPolling() {
    uv_idle_stop(&poll_);
    polling_.store(false);
    if (doneCount_.load() > 0) Drain();
  }

  void Drain() {
    std::vector<std::unique_ptr<PendingCall>> ready;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ready.swap(done_);
      doneCount_.store(0);
    }
    if (ready.empty()) return;
    lastActivity_ = Clock::now();
    int counted = 0;
    for (const auto& call : ready) counted += call->countsInFlight ? 1 : 0;
    if (counted > 0) {
      inFlight_ -= counted;
      if (inFlight_ == 0) uv_unref(reinterpret_cast<uv_handle_t*>(&signal_));
    }
    Napi::Env env(env_);
    Napi::HandleScope handles(env);
    // Microtasks (the awaiting code) run when this scope closes, as after any
    // callback from native code into JS.
    napi_callback_scope scope = nullptr;
    napi_open_callback_scope(env_, nullptr, context_, &scope);
    for (auto& call : ready) {
      Napi::HandleScope callScope(env);
      call->Complete(env);
      call.reset();
    }
    napi_close_callback_scope(env_, scope);
  }

  void Shutdown(napi_async_cleanup_hook_handle hook) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      closed_ = true;
      for (auto& call : done_) static_cast<void>(call.release());
      done_.clear();
    }
    hook_ = hook;
    napi_async_destroy(env_, context_);
    uv_idle_stop(&poll_);
    uv_close(reinterpret_cast<uv_handle_t*>(&poll_), nullptr);
    // Handles close in order, so the async's callback is the last one to run.
    uv_close(reinterpret_cast<uv_handle_t*>(&signal_), [](uv_handle_t* handle) {
      auto* self = static_cast<CallCompletions*>(handle->data);
      napi_remove_async_cleanup_hook(self->hook_);
      self->self_.reset();
    });
  }

  napi_env env_;
  uv_async_t signal_{};
  uv_idle_t poll_{};
  napi_async_cleanup_hook_handle hook_ = nullptr;
  napi_async_context context_ = nullptr;
  std::shared_ptr<CallCompletions> self_;
  std::mutex mutex_;
  bool closed_ = false;
  std::vector<std::unique_ptr<PendingCall>> done_;
  std::atomic<int> doneCount_{0};
  std::atomic<bool> polling_{false};
  // JS thread only.
  int inFlight_ = 0;
  Clock::time_point lastActivity_{};
  Clock::duration pollWindow_{};
  SpinGovernor governor_;
};

namespace {

struct QueuedCall {
  std::unique_ptr<PendingCall> call;
  std::shared_ptr<CallCompletions> completions;
};

using Policy = CallPolicy<QueuedCall>;

// The call threads, shared by every environment of the process. Threads are
// started on demand, up to maxThreads, and never exit: an idle one sleeps.
// Which call starts when is the policy's business (call_policy.h); this class
// only keeps enough threads awake for what the policy says may start.
//
// Each thread sleeps on a wake-up of its own, and the one woken is the one
// that went to sleep last (its stack and caches are the warmest). Wake-ups are
// posted after the lock is released, so a woken thread never runs straight
// into a lock its waker still holds.
class CallThreads {
 public:
  void Submit(QueuedCall queued, const void* lane) {
    Sleeper* toWake = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      changes_.fetch_add(1);
      toWake = Arrange(policy_.Enqueue(std::move(queued), lane, Clock::now()));
    }
    if (toWake != nullptr) toWake->Post();
  }

 private:
  // One thread's bed: a flag under a mutex of its own (POSIX semaphores would do, but
  // glibc 2.34 gave them new symbol versions, past the floor the prebuilt binary keeps).
  struct Sleeper {
    std::mutex mutex;
    std::condition_variable wake;
    bool posted = false;
    void Post() {
      {
        std::lock_guard<std::mutex> lock(mutex);
        posted = true;
      }
      wake.notify_one();
    }
    void Wait() {
      std::unique_lock<std::mutex> lock(mutex);
      wake.wait(lock, [this] { return posted; });
      posted = false;
    }
  };

  struct Finished {
    const void* lane;
    uint64_t runId;
  };

  void Loop() {
    Sleeper self;
    std::optional<Finished> finished;
    bool fromCall = false;
    for (;;) {
      Policy::Started next = Take(self, fromCall, finished);
      fromCall = true;
      next.call.call->Execute();
      // The result first: the JS thread needs a while to wake, and the policy's
      // bookkeeping in Take is done by then. A call submitted meanwhile counts on
      // this thread instead of waking another (which would find nothing to do).
      returning_.fetch_add(1);
      next.call.completions->Finished(std::move(next.call.call));
      next.call.completions.reset();
      finished.reset();
      if (next.lane != nullptr) finished = Finished{next.lane, next.runId};
    }
  }

  // Caller holds mutex_. A call may start now, or once a full lane frees a slot.
  // Returns the sleeper to wake once the lock is released, if any.
  Sleeper* Arrange(const Policy::Wake& wake) {
    if (wake.kind == Policy::Wake::kNow) return WakeForEligible();
    if (wake.kind == Policy::Wake::kAt) return EnsureTimekeeper(wake.at);
    return nullptr;
  }

  // The next call for this thread. `fromCall`: it comes straight from a call,
  // whose lane slot `finished` is freed here under the same lock. Only such a
  // thread polls for the next one, and it takes over from any thread already
  // polling: the one that ran last is the most likely still on a core.
  Policy::Started Take(Sleeper& self, bool fromCall, const std::optional<Finished>& finished) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (fromCall) {
      returning_.fetch_sub(1);
      if (claimedReturning_ > 0) claimedReturning_--;
    }
    if (finished) {
      policy_.Finished(finished->lane, finished->runId, Clock::now());
      changes_.fetch_add(1);
    }
    bool mayPoll = fromCall;
    for (;;) {
      Clock::time_point nextReady;
      std::optional<Policy::Started> started = policy_.Take(Clock::now(), nextReady);
      if (started) {
        Sleeper* toWake = Arrange(started->next);
        lock.unlock();
        if (toWake != nullptr) toWake->Post();
        return std::move(*started);
      }
      int pollMicroseconds = mayPoll ? governor_.Window(busyPollSetting.load(std::memory_order_relaxed)) : 0;
      mayPoll = false;
      if (pollMicroseconds > 0) {
        PollForWork(lock, pollMicroseconds);
        continue;
      }
      if (nextReady != Clock::time_point::max() && !timekeeper_) {
        // Someone has to notice when a connection's running call turns slow.
        timekeeper_ = true;
        timerDeadline_ = nextReady;
        timer_.wait_until(lock, nextReady);
        timekeeper_ = false;
        timerDeadline_ = Clock::time_point::max();
        continue;
      }
      sleepers_.push_back(&self);
      lock.unlock();
      self.Wait();
      lock.lock();
    }
  }

  // Caller holds `lock`, which is released while polling and held again after.
  void PollForWork(std::unique_lock<std::mutex>& lock, int pollMicroseconds) {
    uint64_t turn = pollTurn_.fetch_add(1) + 1;  // an earlier poller sees this and stops
    if (spinners_ == 0) spinners_ = 1;
    uint64_t seen = changes_.load();
    lock.unlock();
    Clock::time_point deadline = Clock::now() + std::chrono::microseconds(pollMicroseconds);
    bool lostTheCore = false;
    for (;;) {
      if (changes_.load() != seen || pollTurn_.load() != turn) break;
      Clock::time_point before = Clock::now();
      if (before >= deadline) break;
      // sched_yield rather than a pause instruction: with two cores, the
      // thread this one waits for may need the very core it spins on.
      sched_yield();
      if (SpinGovernor::LostTheCore(before, Clock::now())) {
        lostTheCore = true;
        break;
      }
    }
    lock.lock();
    if (pollTurn_.load() != turn) return;  // another thread polls now, and owns the state
    spinners_ = 0;
    claimedSpinners_ = 0;
    if (lostTheCore) {
      governor_.Contended();
    } else if (changes_.load() != seen) {
      governor_.Found();
    } else {
      governor_.RanOut();
    }
  }

  // A call may start now: the polling thread, or one on its way back from a
  // call, takes it if not counted on already; else a thread is woken or started.
  Sleeper* WakeForEligible() {
    if (claimedSpinners_ < spinners_) {
      claimedSpinners_++;
      return nullptr;
    }
    if (claimedReturning_ < returning_.load()) {
      claimedReturning_++;
      return nullptr;
    }
    return WakeOrStart();
  }

  Sleeper* EnsureTimekeeper(Clock::time_point readyAt) {
    if (timekeeper_) {
      if (readyAt < timerDeadline_) timer_.notify_one();
      return nullptr;
    }
    return WakeOrStart();
  }

  Sleeper* WakeOrStart() {
    if (!sleepers_.empty()) {
      Sleeper* last = sleepers_.back();
      sleepers_.pop_back();
      return last;
    }
    if (threads_ < maxThreadsSetting.load()) {
      threads_++;
      // Detached: it may be inside a libvirt call when the process exits.
      std::thread([this] {
        pthread_setname_np(pthread_self(), "lvb-call");
        Loop();
      }).detach();
    }
    return nullptr;
  }

  std::mutex mutex_;
  std::condition_variable timer_;
  Policy policy_;
  SpinGovernor governor_;              // under mutex_
  std::atomic<uint64_t> changes_{0};   // queue or lane changes, watched by the poller
  std::atomic<uint64_t> pollTurn_{0};  // bumped by each thread that starts polling
  int threads_ = 0;
  int spinners_ = 0;                // 0 or 1: the thread polling for work
  int claimedSpinners_ = 0;         // pollers a new call already counts on
  std::atomic<int> returning_{0};   // threads between a call's end and their next Take
  int claimedReturning_ = 0;        // of those, how many a new call already counts on
  std::vector<Sleeper*> sleepers_;  // asleep and not yet woken, the latest last
  bool timekeeper_ = false;
  Clock::time_point timerDeadline_ = Clock::time_point::max();
};

// Leaked on purpose: detached threads use it until the process exits.
CallThreads& TheCallThreads() {
  static CallThreads* instance = new CallThreads();
  return *instance;
}

}  // namespace

std::shared_ptr<CallCompletions> InitCallDispatcher(Napi::Env env) {
  auto completions = std::make_shared<CallCompletions>(env);
  completions->Start();
  return completions;
}

void SubmitCall(const std::shared_ptr<CallCompletions>& completions, const void* lane,
                std::unique_ptr<PendingCall> call) {
  completions->Submitted();
  TheCallThreads().Submit(QueuedCall{std::move(call), completions}, lane);
}

void DetachCall(const std::shared_ptr<CallCompletions>& completions, PendingCall* call) { completions->Detach(call); }

bool PostToJsThread(const std::shared_ptr<CallCompletions>& completions, std::unique_ptr<PendingCall>& message) {
  return completions->Post(message);
}

CallTuning GetCallTuning() { return CallTuning{maxThreadsSetting.load(), busyPollSetting.load()}; }

void SetCallTuning(const CallTuning& tuning) {
  maxThreadsSetting.store(tuning.maxThreads);
  busyPollSetting.store(tuning.busyPollMicroseconds);
}

}  // namespace lvb
