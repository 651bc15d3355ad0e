#include "base/once_per_interval.h"

#include <gtest/gtest.h>

namespace regcache {
namespace {

using namespace std::chrono_literals;

TEST(OncePerIntervalTest, LogsTheFirstEventPerKeyThenOncePerIntervalWithWhatWasLeftOut) {
  OncePerInterval once(10min, 100);
  const auto t0 = OncePerInterval::Clock::now();
  uint64_t suppressed = 99;
  EXPECT_TRUE(once.ShouldLog("10.0.0.1", t0, &suppressed));
  EXPECT_EQ(suppressed, 0u);
  EXPECT_FALSE(once.ShouldLog("10.0.0.1", t0 + 1s));
  EXPECT_FALSE(once.ShouldLog("10.0.0.1", t0 + 9min));
  EXPECT_TRUE(once.ShouldLog("10.0.0.2", t0 + 9min));  // keys count apart
  EXPECT_TRUE(once.ShouldLog("10.0.0.1", t0 + 10min, &suppressed));
  EXPECT_EQ(suppressed, 2u);
  EXPECT_FALSE(once.ShouldLog("10.0.0.1", t0 + 11min));
}

TEST(OncePerIntervalTest, RemembersABoundedNumberOfKeys) {
  OncePerInterval once(1min, 3);
  const auto t0 = OncePerInterval::Clock::now();
  for (const char* key : {"a", "b", "c"}) EXPECT_TRUE(once.ShouldLog(key, t0)) << key;
  // Full of keys logged within the interval: a new key is not logged, and not remembered.
  EXPECT_FALSE(once.ShouldLog("d", t0 + 1s));
  EXPECT_EQ(once.tracked(), 3u);
  EXPECT_FALSE(once.ShouldLog("a", t0 + 2s));
  // Once they age out, room is made.
  EXPECT_TRUE(once.ShouldLog("d", t0 + 1min));
  EXPECT_LE(once.tracked(), 3u);
  EXPECT_FALSE(once.ShouldLog("d", t0 + 1min + 1s));
}

}  // namespace
}  // namespace regcache
