// A Clock whose time moves only when told: tests of back-offs, TTLs and deadlines run in
// microseconds and decide exactly when each deadline passes.
//
// Time starts at a fixed point (wall: 2026-01-01T00:00:00Z) and moves by Advance(). SleepFor:
//   - Sleep::kAdvances (default): the sleeper moves the clock by its own duration and returns at
//     once, as if it had slept: for single-threaded code (a retry loop) under test.
//   - Sleep::kWaits: the sleeper waits until another thread's Advance() passes its deadline: for
//     code running on its own threads while the test thread drives time.
// WaitUntil returns once Advance() passed the deadline, on a notify, or spuriously (it re-checks
// every few real milliseconds, so a wake-up racing an Advance is never lost for long).
#pragma once

#include <atomic>
#include <set>

#include "base/clock.h"

namespace regcache::testing {

class FakeClock final : public Clock {
 public:
  enum class Sleep { kAdvances, kWaits };
  explicit FakeClock(Sleep sleep = Sleep::kAdvances);

  Steady::time_point Now() const override;
  Wall::time_point WallNow() const override;
  void SleepFor(Steady::duration d) override;
  void WaitUntil(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                 Steady::time_point deadline) override;

  // Moves both clocks forward and wakes every waiter.
  void Advance(Steady::duration d);
  // Total time slept through SleepFor, for asserting back-off schedules.
  Steady::duration slept() const;
  // Threads asleep in SleepFor (Sleep::kWaits) or WaitUntil now: a test advances time once the
  // code under test is waiting, so that its deadline is counted from where the test expects.
  int waiting() const;

 private:
  const Sleep sleep_;
  mutable std::mutex mu_;
  std::condition_variable advanced_;
  Steady::duration elapsed_{0};
  Steady::duration slept_{0};
  int sleepers_ = 0;
  std::set<std::condition_variable*> waiters_;
};

}  // namespace regcache::testing
