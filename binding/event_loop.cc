#include "event_loop.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <libvirt/libvirt.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <limits>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

namespace lvb {

namespace {

// epoll keys for the loop's own descriptors; handle keys are watch ids (> 0).
constexpr uint64_t kTimerKey = 0;
constexpr uint64_t kWakeKey = std::numeric_limits<uint64_t>::max();

int64_t NowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

uint32_t ToEpoll(int events) {
  uint32_t out = 0;
  if (events & VIR_EVENT_HANDLE_READABLE) out |= EPOLLIN | EPOLLPRI;
  if (events & VIR_EVENT_HANDLE_WRITABLE) out |= EPOLLOUT;
  return out;
}

int FromEpoll(uint32_t events) {
  int out = 0;
  if (events & (EPOLLIN | EPOLLPRI)) out |= VIR_EVENT_HANDLE_READABLE;
  if (events & EPOLLOUT) out |= VIR_EVENT_HANDLE_WRITABLE;
  if (events & EPOLLERR) out |= VIR_EVENT_HANDLE_ERROR;
  if (events & EPOLLHUP) out |= VIR_EVENT_HANDLE_HANGUP;
  return out;
}

struct Handle {
  int fd = -1;       // libvirt's descriptor, passed back to the callback
  int epollFd = -1;  // our duplicate of it, the one registered with epoll
  int events = 0;    // VIR_EVENT_HANDLE_* libvirt currently wants
  bool registered = false;
  bool alwaysReady = false;  // a descriptor epoll cannot watch (a regular file)
  bool deleted = false;
  virEventHandleCallback callback = nullptr;
  void* opaque = nullptr;
  virFreeCallback free = nullptr;
};

struct Timeout {
  int frequencyMs = -1;  // -1 disabled, 0 every iteration, > 0 period
  int64_t dueNs = 0;
  bool deleted = false;
  virEventTimeoutCallback callback = nullptr;
  void* opaque = nullptr;
  virFreeCallback free = nullptr;
};

// libvirt's event loop contract on epoll, a timerfd and an eventfd.
//
// Why not libvirt's default implementation: its loop polls a fixed descriptor
// set, so every change to a watch must interrupt the loop thread to rebuild it.
// Every RPC disables the connection's socket watch while the calling thread
// does the I/O itself and re-enables it after, which costs two thread wake-ups
// per call, about a fifth of a getXMLDesc round trip here. epoll's interest
// list and a timerfd's deadline can be changed from any thread while the loop
// sleeps, so watch and timeout changes never wake it. Only removals do, so the
// free callbacks run promptly (libvirt forbids running them inside remove).
class EpollLoop {
 public:
  bool Start() {
    epoll_ = epoll_create1(EPOLL_CLOEXEC);
    timer_ = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    wake_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (epoll_ < 0 || timer_ < 0 || wake_ < 0) return false;
    epoll_event timerEvent{EPOLLIN, {.u64 = kTimerKey}};
    epoll_event wakeEvent{EPOLLIN, {.u64 = kWakeKey}};
    if (epoll_ctl(epoll_, EPOLL_CTL_ADD, timer_, &timerEvent) < 0) return false;
    if (epoll_ctl(epoll_, EPOLL_CTL_ADD, wake_, &wakeEvent) < 0) return false;
    // Detached: a native thread does not keep Node's loop alive, so a process
    // with no pending work or listeners still exits.
    std::thread([this] {
      pthread_setname_np(pthread_self(), "lvb-events");
      Run();
    }).detach();
    return true;
  }

  int AddHandle(int fd, int events, virEventHandleCallback callback, void* opaque, virFreeCallback free) {
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (copy < 0) return -1;
    std::lock_guard<std::mutex> lock(mutex_);
    int watch = nextId_++;
    Handle& handle = handles_[watch];
    handle.fd = fd;
    handle.epollFd = copy;
    handle.callback = callback;
    handle.opaque = opaque;
    handle.free = free;
    if (!ApplyInterest(watch, handle, events)) {
      // Nothing was registered, so libvirt gets the failure and frees its side.
      close(copy);
      handles_.erase(watch);
      return -1;
    }
    return watch;
  }

  void UpdateHandle(int watch, int events) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = handles_.find(watch);
    if (it == handles_.end() || it->second.deleted) return;
    ApplyInterest(watch, it->second, events);
  }

  int RemoveHandle(int watch) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = handles_.find(watch);
      if (it == handles_.end() || it->second.deleted) return -1;
      Handle& handle = it->second;
      ApplyInterest(watch, handle, 0);
      close(handle.epollFd);
      handle.epollFd = -1;
      handle.deleted = true;
      cleanupPending_ = true;
    }
    Wake();
    return 0;
  }

  int AddTimeout(int frequencyMs, virEventTimeoutCallback callback, void* opaque, virFreeCallback free) {
    std::lock_guard<std::mutex> lock(mutex_);
    int id = nextId_++;
    Timeout& timeout = timeouts_[id];
    timeout.callback = callback;
    timeout.opaque = opaque;
    timeout.free = free;
    SetFrequency(timeout, frequencyMs);
    ArmTimer();
    return id;
  }

  void UpdateTimeout(int id, int frequencyMs) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = timeouts_.find(id);
    if (it == timeouts_.end() || it->second.deleted) return;
    SetFrequency(it->second, frequencyMs);
    ArmTimer();
  }

  int RemoveTimeout(int id) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = timeouts_.find(id);
      if (it == timeouts_.end() || it->second.deleted) return -1;
      it->second.deleted = true;
      it->second.frequencyMs = -1;
      cleanupPending_ = true;
      ArmTimer();
    }
    Wake();
    return 0;
  }

 private:
  struct ReadyHandle {
    int watch;
    int events;
  };

  // Caller holds mutex_. Interest 0 takes the descriptor out of epoll entirely:
  // epoll reports errors and hang-ups even with an empty mask, and a watch
  // libvirt disabled must not wake the loop.
  // False when epoll refused the descriptor for good (libvirt is told at add).
  bool ApplyInterest(int watch, Handle& handle, int events) {
    handle.events = events;
    if (handle.alwaysReady) {
      if (events != 0) Wake();
      return true;
    }
    if (events == 0) {
      if (handle.registered) epoll_ctl(epoll_, EPOLL_CTL_DEL, handle.epollFd, nullptr);
      handle.registered = false;
      return true;
    }
    epoll_event event{ToEpoll(events), {.u64 = static_cast<uint64_t>(watch)}};
    if (epoll_ctl(epoll_, handle.registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, handle.epollFd, &event) == 0) {
      handle.registered = true;
      return true;
    }
    if (errno == EPERM) {
      // poll(2) reports regular files as always ready; keep that contract.
      handle.alwaysReady = true;
      Wake();
      return true;
    }
    return false;
  }

  void SetFrequency(Timeout& timeout, int frequencyMs) {
    timeout.frequencyMs = frequencyMs;
    if (frequencyMs >= 0) timeout.dueNs = NowNs() + static_cast<int64_t>(frequencyMs) * 1000000;
  }

  // Caller holds mutex_. Points the timerfd at the earliest enabled deadline.
  void ArmTimer() {
    int64_t earliest = std::numeric_limits<int64_t>::max();
    for (const auto& [id, timeout] : timeouts_) {
      if (!timeout.deleted && timeout.frequencyMs >= 0 && timeout.dueNs < earliest) earliest = timeout.dueNs;
    }
    if (earliest == armedNs_) return;
    armedNs_ = earliest;
    itimerspec spec{};
    if (earliest != std::numeric_limits<int64_t>::max()) {
      // A zero it_value would disarm the timer; a deadline already past fires at once.
      int64_t due = earliest > 0 ? earliest : 1;
      spec.it_value.tv_sec = due / 1000000000;
      spec.it_value.tv_nsec = due % 1000000000;
    }
    timerfd_settime(timer_, TFD_TIMER_ABSTIME, &spec, nullptr);
  }

  void Wake() {
    uint64_t one = 1;
    ssize_t ignored = write(wake_, &one, sizeof one);
    (void)ignored;
  }

  void Drain(int fd) {
    uint64_t value;
    ssize_t ignored = read(fd, &value, sizeof value);
    (void)ignored;
  }

  void Run() {
    std::vector<epoll_event> events(64);
    std::vector<ReadyHandle> ready;
    std::vector<int> dueTimeouts;
    // An enabled watch on a regular file is always ready, so the loop must not block.
    bool pollOnly = false;
    for (;;) {
      int count = epoll_wait(epoll_, events.data(), static_cast<int>(events.size()), pollOnly ? 0 : -1);
      if (count < 0 && errno != EINTR) continue;
      ready.clear();
      dueTimeouts.clear();
      {
        std::lock_guard<std::mutex> lock(mutex_);
        for (int i = 0; i < count; i++) {
          uint64_t key = events[i].data.u64;
          if (key == kTimerKey) {
            Drain(timer_);
            armedNs_ = 0;  // expired: the next ArmTimer must set it again
          } else if (key == kWakeKey) {
            Drain(wake_);
          } else {
            ready.push_back({static_cast<int>(key), FromEpoll(events[i].events)});
          }
        }
        size_t fromEpoll = ready.size();
        for (const auto& [watch, handle] : handles_) {
          if (handle.alwaysReady && !handle.deleted && handle.events != 0) ready.push_back({watch, handle.events});
        }
        pollOnly = ready.size() > fromEpoll;
        int64_t now = NowNs();
        for (const auto& [id, timeout] : timeouts_) {
          if (!timeout.deleted && timeout.frequencyMs >= 0 && timeout.dueNs <= now) dueTimeouts.push_back(id);
        }
      }
      // Callbacks run unlocked: they may add, update or remove watches and timeouts.
      for (int id : dueTimeouts) DispatchTimeout(id);
      for (const ReadyHandle& item : ready) DispatchHandle(item);
      FinishIteration();
    }
  }

  void DispatchTimeout(int id) {
    virEventTimeoutCallback callback;
    void* opaque;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = timeouts_.find(id);
      if (it == timeouts_.end() || it->second.deleted || it->second.frequencyMs < 0) return;
      Timeout& timeout = it->second;
      int64_t now = NowNs();
      if (timeout.dueNs > now) return;  // re-armed later by another thread meanwhile
      timeout.dueNs = now + static_cast<int64_t>(timeout.frequencyMs) * 1000000;
      callback = timeout.callback;
      opaque = timeout.opaque;
    }
    callback(id, opaque);
  }

  void DispatchHandle(const ReadyHandle& item) {
    virEventHandleCallback callback;
    void* opaque;
    int fd;
    int events;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = handles_.find(item.watch);
      // An event epoll gathered before the watch was disabled or removed is stale.
      if (it == handles_.end() || it->second.deleted || it->second.events == 0) return;
      Handle& handle = it->second;
      events = item.events & (handle.events | VIR_EVENT_HANDLE_ERROR | VIR_EVENT_HANDLE_HANGUP);
      if (events == 0) return;
      callback = handle.callback;
      opaque = handle.opaque;
      fd = handle.fd;
    }
    callback(item.watch, fd, events, opaque);
  }

  // Re-arms the timer for the timeouts just run, then calls the free callbacks
  // of what was removed: here, on the loop thread after dispatching, never
  // inside a remove call, where libvirt may hold locks the callback takes.
  void FinishIteration() {
    std::vector<std::pair<virFreeCallback, void*>> frees;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ArmTimer();
      if (!cleanupPending_) return;
      cleanupPending_ = false;
      TakeDeleted(handles_, frees);
      TakeDeleted(timeouts_, frees);
    }
    for (auto& [free, opaque] : frees) free(opaque);
  }

  template <typename Entries>
  static void TakeDeleted(Entries& entries, std::vector<std::pair<virFreeCallback, void*>>& frees) {
    for (auto it = entries.begin(); it != entries.end();) {
      if (!it->second.deleted) {
        ++it;
        continue;
      }
      if (it->second.free) frees.emplace_back(it->second.free, it->second.opaque);
      it = entries.erase(it);
    }
  }

  std::mutex mutex_;
  int epoll_ = -1;
  int timer_ = -1;
  int wake_ = -1;
  int nextId_ = 1;
  int64_t armedNs_ = std::numeric_limits<int64_t>::max();
  bool cleanupPending_ = false;
  std::unordered_map<int, Handle> handles_;
  std::unordered_map<int, Timeout> timeouts_;
};

// Lives for the whole process: libvirt may call into it until exit.
EpollLoop* loop = nullptr;

int AddHandle(int fd, int events, virEventHandleCallback cb, void* opaque, virFreeCallback ff) {
  return loop->AddHandle(fd, events, cb, opaque, ff);
}
void UpdateHandle(int watch, int events) { loop->UpdateHandle(watch, events); }
int RemoveHandle(int watch) { return loop->RemoveHandle(watch); }
int AddTimeout(int frequencyMs, virEventTimeoutCallback cb, void* opaque, virFreeCallback ff) {
  return loop->AddTimeout(frequencyMs, cb, opaque, ff);
}
void UpdateTimeout(int id, int frequencyMs) { loop->UpdateTimeout(id, frequencyMs); }
int RemoveTimeout(int id) { return loop->RemoveTimeout(id); }

}  // namespace

namespace {

// The loop thread, the call threads and the release thread run this library's
// code until the process exits. Node unloads an addon when the last environment
// that loaded it goes away (a worker thread that was the only user ends), which
// would pull the code from under them: pin the library for the process's life.
void PinThisLibrary() {
  Dl_info self{};
  if (dladdr(reinterpret_cast<void*>(&PinThisLibrary), &self) != 0 && self.dli_fname != nullptr) {
    dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
  }
}

}  // namespace

int EnsureEventLoop() {
  static std::once_flag once;
  static int error = 0;
  std::call_once(once, [] {
    PinThisLibrary();
    loop = new EpollLoop();
    if (!loop->Start()) {
      error = errno;
      return;
    }
    virEventRegisterImpl(AddHandle, UpdateHandle, RemoveHandle, AddTimeout, UpdateTimeout, RemoveTimeout);
  });
  return error;
}

}  // namespace lvb
