// Whether a thread about to wait should poll first, and for how long, learnt from
// how its last polls went (call_dispatcher.cc polls on both sides of a call).
//
// Polling pays on a quiet machine: waking a sleeping thread costs far more than
// the few microseconds a call thread or the JS thread waits between a call and the
// next. It backfires on a busy one: every microsecond spun is taken from the other
// work on the core (the backups and VMs a real host runs), and the thread waited
// for may need that very core. So:
// - a poll that found its work keeps the full window;
// - one that ran out halves the window; below kMinWindow polling stops, and is
//   tried again at the full window every kRetryAfter waits, to notice when it
//   would pay again;
// - one during which the core went elsewhere (a yield that returned only after
//   kContended: another runnable thread took the core for a time slice) stops
//   polling for the next kCooldown waits, since the machine has other work.
// Not thread-safe: each polling site owns one, used under that site's lock or on
// its one thread.
#pragma once

#include <algorithm>
#include <chrono>

namespace lvb {

class SpinGovernor {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr Clock::duration kContended = std::chrono::microseconds(500);
  static constexpr int kMinWindowMicros = 10;
  static constexpr int kRetryAfter = 64;
  static constexpr int kCooldown = 256;

  // Microseconds the coming wait may poll before it sleeps; 0: sleep at once.
  // `setting` is the most allowed (CallTuning::busyPollMicroseconds).
  int Window(int setting) {
    if (setting <= 0) return 0;
    if (cooldown_ > 0) {
      cooldown_--;
      return 0;
    }
    if (window_ < 0 || window_ > setting) window_ = setting;
    if (window_ >= kMinWindowMicros) return window_;
    if (++sinceRetry_ < kRetryAfter) return 0;
    sinceRetry_ = 0;
    return setting;
  }

  // The poll found what it waited for.
  void Found() { window_ = -1; }

  // The poll ran out of time without it.
  void RanOut() { window_ = std::max(0, window_ / 2); }

  // The core went to another thread during the poll.
  void Contended() {
    cooldown_ = kCooldown;
    window_ = -1;
  }

  // Whether a yield that began at `before` and ended at `after` lost the core.
  static bool LostTheCore(Clock::time_point before, Clock::time_point after) { return after - before >= kContended; }

 private:
  int window_ = -1;  // -1: the full setting
  int cooldown_ = 0;
  int sinceRetry_ = 0;
};

}  // namespace lvb
