// Time, injectable: every read of the time and every sleep outside this file goes through a
// Clock, so that tests drive time with testing/fake_clock.h instead of waiting for it (Envoy's
// TimeSource, leveldb's Env).
//
// Contract:
//   - Now() is monotonic (deadlines, back-offs, TTL ages within a process); WallNow() is the
//     calendar (what is persisted, Retry-After dates, log and status-page times).
//   - SleepFor(d) returns once `d` has passed on this clock.
//   - WaitUntil(cv, lock, deadline) returns when `cv` is notified, when `deadline` passes on this
//     clock, or spuriously; like std::condition_variable::wait_until, callers re-check their
//     condition in a loop. `lock` is held on return.
//   - Implementations are thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace regcache {

class Clock {
 public:
  using Steady = std::chrono::steady_clock;
  using Wall = std::chrono::system_clock;

  virtual ~Clock() = default;
  virtual Steady::time_point Now() const = 0;
  virtual Wall::time_point WallNow() const = 0;
  virtual void SleepFor(Steady::duration d) = 0;
  virtual void WaitUntil(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                         Steady::time_point deadline) = 0;

  // Seconds since the epoch on WallNow(): what the metadata store records.
  int64_t WallSeconds() const {
    return std::chrono::duration_cast<std::chrono::seconds>(WallNow().time_since_epoch()).count();
  }

  // The process's real clock (never destroyed; safe to use from any thread at any time).
  static Clock& Real();
};

}  // namespace regcache
