#include "base/clock.h"

#include <thread>

namespace regcache {
namespace {

// The one place that reads the system's clocks and sleeps.
class RealClock final : public Clock {
 public:
  Steady::time_point Now() const override { return Steady::now(); }
  Wall::time_point WallNow() const override { return Wall::now(); }
  void SleepFor(Steady::duration d) override { std::this_thread::sleep_for(d); }
  void WaitUntil(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                 Steady::time_point deadline) override {
    cv.wait_until(lock, deadline);
  }
};

}  // namespace

Clock& Clock::Real() {
  static RealClock* clock = new RealClock();  // never destroyed: threads may outlive statics
  return *clock;
}

}  // namespace regcache
