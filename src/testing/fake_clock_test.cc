#include "testing/fake_clock.h"

#include <gtest/gtest.h>

#include <thread>

namespace regcache::testing {
namespace {

using namespace std::chrono_literals;

TEST(FakeClockTest, TimeMovesOnlyWhenTold) {
  FakeClock clock;
  const auto t0 = clock.Now();
  const auto w0 = clock.WallNow();
  EXPECT_EQ(clock.WallSeconds(), 1767225600);
  EXPECT_EQ(clock.Now(), t0);
  clock.Advance(90s);
  EXPECT_EQ(clock.Now() - t0, 90s);
  EXPECT_EQ(clock.WallNow() - w0, 90s);
}

TEST(FakeClockTest, ASleeperAdvancesTheClockByDefault) {
  FakeClock clock;
  const auto t0 = clock.Now();
  clock.SleepFor(2s);
  clock.SleepFor(500ms);
  EXPECT_EQ(clock.Now() - t0, 2500ms);
  EXPECT_EQ(clock.slept(), 2500ms);
}

TEST(FakeClockTest, AWaitingSleeperWakesWhenAnotherThreadAdvancesPastItsDeadline) {
  FakeClock clock(FakeClock::Sleep::kWaits);
  std::atomic<bool> woke{false};
  std::thread sleeper([&] {
    clock.SleepFor(10s);
    woke = true;
  });
  while (clock.waiting() == 0) std::this_thread::yield();
  clock.Advance(9s);
  std::this_thread::sleep_for(20ms);  // real time: the sleeper must still be asleep
  EXPECT_FALSE(woke);
  clock.Advance(1s);
  sleeper.join();
  EXPECT_TRUE(woke);
}

TEST(FakeClockTest, WaitUntilReturnsOnceTheDeadlinePassesOnThisClock) {
  FakeClock clock(FakeClock::Sleep::kWaits);
  std::mutex mu;
  std::condition_variable cv;
  const auto deadline = clock.Now() + 1h;
  std::atomic<bool> done{false};
  std::thread waiter([&] {
    std::unique_lock<std::mutex> lock(mu);
    while (clock.Now() < deadline) clock.WaitUntil(cv, lock, deadline);
    done = true;
  });
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(done);
  clock.Advance(1h);
  waiter.join();
  EXPECT_TRUE(done);
}

}  // namespace
}  // namespace regcache::testing
