// Which queued libvirt call starts next: the dispatcher's rules without its
// threads (call_dispatcher.cc runs them under its lock), so they can be tested
// on their own with a clock the test sets (call_policy_probe.h), and cost a
// few map operations per call instead of a scan of the whole queue.
//
// Lanes: at most kLaneWidth quick calls of one connection (a lane) run at once;
// a call that has run longer than kSlowCall no longer counts. Why: libvirt's
// client sends all of a connection's calls over one socket, and every extra
// thread on it costs about four thread wake-ups per call (the pipe that
// interrupts the thread doing the I/O, the condition variable it signals back,
// and their returns). Sixteen threads on one connection were slower than two;
// two keep the daemon busy with one call while the reply to the other travels,
// and a thread that finishes a call moves straight to the connection's next
// one. A slow or hung call still holds up the rest of its connection for at
// most kSlowCall. Calls without a lane are never held back.
//
// Wide lanes: the two-call limit is for a daemon close by, where a call's time is
// CPU on both ends. A connection whose quickest recent calls take kLatencyBound
// or more waits on the network (a hypervisor a millisecond or two away): calls in
// flight there overlap their waiting instead of competing for a core, so such a
// lane runs up to kWideLaneWidth at once. "Quickest recent" is the least duration
// among the lane's last calls (two windows of kWindowCalls), so one slow call
// never widens a lane, and a link that turns fast narrows it again within two
// windows.
//
// Order: among the calls that may start, the one submitted first starts first.
// Each lane keeps its own queue; the lanes whose first call may start are kept
// ordered by that call's submission number, and the lanes that are full by the
// moment their oldest quick call turns slow.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

namespace lvb {

template <typename Call>
class CallPolicy {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr size_t kLaneWidth = 2;
  static constexpr Clock::duration kSlowCall = std::chrono::microseconds(1000);
  static constexpr Clock::duration kLatencyBound = std::chrono::microseconds(500);
  static constexpr size_t kWideLaneWidth = 16;
  static constexpr int kWindowCalls = 32;

  // What the threads should do about a call that became startable, or will.
  struct Wake {
    enum Kind { kNone, kNow, kAt } kind = kNone;
    Clock::time_point at{};  // for kAt: when a slot of the lane frees up
  };

  struct Started {
    Call call;
    const void* lane;
    uint64_t runId;  // pass to Finished
    Wake next;       // about the next call of the same lane
  };

  // Queues `call` on `lane` (nullptr: no lane). Says whether a thread should
  // start it now; or, when it is the first call its lane cannot start yet, when
  // someone should look again; calls further back get their turn arranged as
  // the ones ahead of them start (Started::next).
  Wake Enqueue(Call call, const void* lane, Clock::time_point now) {
    Entry entry{nextSequence_++, std::move(call)};
    queued_++;
    if (lane == nullptr) {
      laneless_.push_back(std::move(entry));
      return {Wake::kNow, {}};
    }
    Lane& state = lanes_[lane];
    state.id = lane;
    size_t ahead = state.queued.size();
    Clock::time_point readyAt{};
    size_t slots = FreeSlots(state, now, readyAt);
    state.queued.push_back(std::move(entry));
    if (ahead == 0) Place(lane, state, now);
    if (ahead < slots) return {Wake::kNow, {}};
    if (ahead == slots) return {Wake::kAt, readyAt};
    return {};
  }

  // The call to start now, if any. `nextReady` gets the earliest moment a full
  // lane frees a slot (Clock::time_point::max() when none is waiting for that).
  std::optional<Started> Take(Clock::time_point now, Clock::time_point& nextReady) {
    Reopen(now);
    nextReady = full_.empty() ? Clock::time_point::max() : full_.begin()->first;
    const bool hasLaneless = !laneless_.empty();
    const bool hasOpen = !open_.empty();
    if (!hasLaneless && !hasOpen) return std::nullopt;
    if (hasLaneless && (!hasOpen || laneless_.front().sequence < open_.begin()->first)) {
      Started started{std::move(laneless_.front().call), nullptr, 0, {}};
      laneless_.pop_front();
      queued_--;
      return started;
    }
    const void* lane = open_.begin()->second;
    Lane& state = lanes_[lane];
    Unplace(state);
    Started started{std::move(state.queued.front().call), lane, ++nextRunId_, {}};
    state.queued.pop_front();
    queued_--;
    state.running.push_back({started.runId, now});
    if (!state.queued.empty()) {
      Place(lane, state, now);
      if (state.placement == Placement::kOpen) {
        started.next = {Wake::kNow, {}};
      } else {
        started.next = {Wake::kAt, state.key.first};
      }
      nextReady = full_.empty() ? Clock::time_point::max() : full_.begin()->first;
    }
    return started;
  }

  // The call `runId` of `lane` is over: its slot frees up.
  void Finished(const void* lane, uint64_t runId, Clock::time_point now) {
    auto it = lanes_.find(lane);
    if (it == lanes_.end()) return;
    Lane& state = it->second;
    std::vector<Running>& running = state.running;
    for (size_t i = 0; i < running.size(); i++) {
      if (running[i].id == runId) {
        Measure(lane, now - running[i].start);
        running[i] = running.back();
        running.pop_back();
        break;
      }
    }
    if (state.placement == Placement::kFull) {
      Unplace(state);
      Place(lane, state, now);
    }
    if (running.empty() && state.queued.empty()) lanes_.erase(it);
  }

  size_t queued() const { return queued_; }
  size_t lanes() const { return lanes_.size(); }

 private:
  struct Entry {
    uint64_t sequence;
    Call call;
  };

  struct Running {
    uint64_t id;
    Clock::time_point start;
  };

  enum class Placement { kNone, kOpen, kFull };

  struct Lane {
    const void* id = nullptr;
    std::deque<Entry> queued;
    std::vector<Running> running;
    Placement placement = Placement::kNone;
    // Its key in open_ (first call's sequence) or full_ (when a slot frees).
    std::pair<Clock::time_point, uint64_t> key{};
  };

  // How many more calls the lane may start now; when none, `readyAt` is when
  // its oldest quick call turns slow and frees a slot.
  size_t FreeSlots(const Lane& state, Clock::time_point now, Clock::time_point& readyAt) const {
    const size_t width = Width(state.id);
    size_t quick = 0;
    Clock::time_point oldestQuick = Clock::time_point::max();
    for (const Running& running : state.running) {
      if (now - running.start < kSlowCall) {
        quick++;
        if (running.start < oldestQuick) oldestQuick = running.start;
      }
    }
    if (quick < width) return width - quick;
    readyAt = oldestQuick + kSlowCall;
    return 0;
  }

  // How many quick calls `lane` may run at once: see "Wide lanes" above.
  size_t Width(const void* lane) const {
    auto it = links_.find(lane);
    if (it == links_.end() || !it->second.Known()) return kLaneWidth;
    return it->second.Quickest() >= kLatencyBound ? kWideLaneWidth : kLaneWidth;
  }

  // The quickest of a lane's recent calls: the least duration over the current
  // window of kWindowCalls and the one before.
  struct LinkEstimate {
    Clock::duration previous = Clock::duration::max();
    Clock::duration current = Clock::duration::max();
    int inWindow = 0;

    void Add(Clock::duration took) {
      if (took < current) current = took;
      if (++inWindow < kWindowCalls) return;
      previous = current;
      current = Clock::duration::max();
      inWindow = 0;
    }
    bool Known() const { return previous != Clock::duration::max() || current != Clock::duration::max(); }
    Clock::duration Quickest() const { return std::min(previous, current); }
  };

  void Measure(const void* lane, Clock::duration took) {
    // Lanes are connections, and connections come and go: forgetting every
    // estimate now and then keeps the map small (an estimate is back in one call).
    if (links_.size() > kMaxLinks && links_.find(lane) == links_.end()) links_.clear();
    links_[lane].Add(took);
  }

  // Files a lane with queued calls under open_ or full_.
  void Place(const void* lane, Lane& state, Clock::time_point now) {
    Clock::time_point readyAt{};
    if (FreeSlots(state, now, readyAt) > 0) {
      state.placement = Placement::kOpen;
      state.key = {Clock::time_point{}, state.queued.front().sequence};
      open_.emplace(state.key.second, lane);
    } else {
      state.placement = Placement::kFull;
      state.key = {readyAt, 0};
      full_.emplace(readyAt, lane);
    }
  }

  void Unplace(Lane& state) {
    if (state.placement == Placement::kOpen) {
      open_.erase({state.key.second, state.id});
    } else if (state.placement == Placement::kFull) {
      full_.erase({state.key.first, state.id});
    }
    state.placement = Placement::kNone;
  }

  // Full lanes whose moment has come are filed again.
  void Reopen(Clock::time_point now) {
    while (!full_.empty() && full_.begin()->first <= now) {
      const void* lane = full_.begin()->second;
      full_.erase(full_.begin());
      Lane& state = lanes_[lane];
      state.placement = Placement::kNone;
      Place(lane, state, now);
    }
  }

  static constexpr size_t kMaxLinks = 1024;

  uint64_t nextSequence_ = 0;
  uint64_t nextRunId_ = 0;
  size_t queued_ = 0;
  std::deque<Entry> laneless_;
  std::unordered_map<const void*, Lane> lanes_;
  std::set<std::pair<uint64_t, const void*>> open_;
  std::set<std::pair<Clock::time_point, const void*>> full_;
  std::unordered_map<const void*, LinkEstimate> links_;
};

}  // namespace lvb
