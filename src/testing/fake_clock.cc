#include "testing/fake_clock.h"

namespace regcache::testing {
namespace {

// Far from zero, so that "now - a long TTL" is never before the clock's epoch.
constexpr auto kSteadyStart = std::chrono::hours(24 * 365);
constexpr auto kWallStart = std::chrono::seconds(1767225600);  // 2026-01-01T00:00:00Z
constexpr auto kRecheck = std::chrono::milliseconds(5);

}  // namespace

FakeClock::FakeClock(Sleep sleep) : sleep_(sleep) {}

Clock::Steady::time_point FakeClock::Now() const {
  std::lock_guard<std::mutex> lock(mu_);
  return Steady::time_point(kSteadyStart + elapsed_);
}

Clock::Wall::time_point FakeClock::WallNow() const {
  std::lock_guard<std::mutex> lock(mu_);
  return Wall::time_point(std::chrono::duration_cast<Wall::duration>(kWallStart + elapsed_));
}

void FakeClock::SleepFor(Steady::duration d) {
  std::unique_lock<std::mutex> lock(mu_);
  slept_ += d;
  if (sleep_ == Sleep::kAdvances) {
    elapsed_ += d;
    // Under mu_: a waiter leaves waiters_ only under it, so each pointer is alive here.
    for (auto* cv : waiters_) cv->notify_all();
    advanced_.notify_all();
    return;
  }
  const auto until = elapsed_ + d;
  ++sleepers_;
  advanced_.wait(lock, [&] { return elapsed_ >= until; });
  --sleepers_;
}

void FakeClock::WaitUntil(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                          Steady::time_point deadline) {
  if (Now() >= deadline) return;
  {
    std::lock_guard<std::mutex> own(mu_);
    waiters_.insert(&cv);
  }
  cv.wait_for(lock, kRecheck);
  std::lock_guard<std::mutex> own(mu_);
  waiters_.erase(&cv);
}

void FakeClock::Advance(Steady::duration d) {
  std::lock_guard<std::mutex> lock(mu_);
  elapsed_ += d;
  // Under mu_: a waiter leaves waiters_ only under it, so each pointer is alive here.
  for (auto* cv : waiters_) cv->notify_all();
  advanced_.notify_all();
}

int FakeClock::waiting() const {
  std::lock_guard<std::mutex> lock(mu_);
  return sleepers_ + static_cast<int>(waiters_.size());
}

Clock::Steady::duration FakeClock::slept() const {
  std::lock_guard<std::mutex> lock(mu_);
  return slept_;
}

}  // namespace regcache::testing
