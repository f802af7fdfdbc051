#include "release_thread.h"

#include <pthread.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

namespace lvb {

namespace {

class ReleaseThread {
 public:
  void Push(std::function<void()> release) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(std::move(release));
      if (!started_) {
        started_ = true;
        // Detached: it only ever drops references, and the process may exit at any time.
        std::thread([this] {
          pthread_setname_np(pthread_self(), "lvb-release");
          Loop();
        }).detach();
      }
    }
    wake_.notify_one();
  }

 private:
  void Loop() {
    for (;;) {
      std::function<void()> next;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [this] { return !queue_.empty(); });
        next = std::move(queue_.front());
        queue_.pop_front();
      }
      next();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> queue_;
  bool started_ = false;
};

// Leaked on purpose: the detached thread may still use it while static
// destructors run at exit.
ReleaseThread& TheReleaseThread() {
  static ReleaseThread* instance = new ReleaseThread();
  return *instance;
}

}  // namespace

void ReleaseInBackground(std::function<void()> release) { TheReleaseThread().Push(std::move(release)); }

}  // namespace lvb
