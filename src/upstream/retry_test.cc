#include "upstream/retry.h"

#include <gtest/gtest.h>

namespace regcache::upstream {
namespace {

TEST(RetryTest, BackoffGrowsWithJitterAndCap) {
  RetryPolicy p;
  p.base_delay = std::chrono::milliseconds(100);
  p.max_delay = std::chrono::milliseconds(1000);
  for (int i = 0; i < 50; ++i) {
    auto d1 = p.Backoff(1).count();
    EXPECT_GE(d1, 50);
    EXPECT_LE(d1, 100);
    auto d3 = p.Backoff(3).count();
    EXPECT_GE(d3, 200);
    EXPECT_LE(d3, 400);
    auto d10 = p.Backoff(10).count();
    EXPECT_GE(d10, 500);
    EXPECT_LE(d10, 1000);
  }
}

TEST(RetryTest, RetryableStatuses) {
  for (long s : {408, 429, 500, 502, 503, 504}) EXPECT_TRUE(IsRetryableHttpStatus(s)) << s;
  for (long s : {200, 400, 401, 403, 404, 501}) EXPECT_FALSE(IsRetryableHttpStatus(s)) << s;
}

TEST(RetryTest, RetryAfterSecondsAndDate) {
  auto now = std::chrono::system_clock::from_time_t(1700000000);  // 2023-11-14 22:13:20 GMT
  EXPECT_EQ(ParseRetryAfter("120", now), std::chrono::seconds(120));
  EXPECT_EQ(ParseRetryAfter("Tue, 14 Nov 2023 22:14:20 GMT", now), std::chrono::seconds(60));
  EXPECT_EQ(ParseRetryAfter("Tue, 14 Nov 2023 22:00:00 GMT", now), std::chrono::seconds(0));
  EXPECT_FALSE(ParseRetryAfter("soon", now));
  EXPECT_FALSE(ParseRetryAfter("", now));
  EXPECT_FALSE(ParseRetryAfter("-5", now));
}

}  // namespace
}  // namespace regcache::upstream
