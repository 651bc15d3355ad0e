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

// Found by fuzz_www_authenticate: a delta beyond int64 came back negative, and a date after 2262
// or before 1678 overflowed system_clock's nanoseconds (undefined behaviour). Both are "longer
// than any limit" or "already passed", never negative.
TEST(RetryTest, RetryAfterOutOfRangeIsLongOrZeroNeverNegative) {
  auto now = std::chrono::system_clock::from_time_t(1700000000);
  const auto year = std::chrono::hours(24 * 365);
  for (const char* v : {"18446744073709551615", "9223372036854775808",
                        "Wed, 21 Oct 8310 07:28:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT"}) {
    auto ra = ParseRetryAfter(v, now);
    ASSERT_TRUE(ra) << v;
    EXPECT_GE(*ra, year) << v;
    // Callers convert it to milliseconds to sleep; that must not overflow either.
    EXPECT_GT(std::chrono::duration_cast<std::chrono::milliseconds>(*ra).count(), 0) << v;
  }
  EXPECT_EQ(ParseRetryAfter("Mon, 01 Jan 1000 00:00:00 GMT", now), std::chrono::seconds(0));
}

}  // namespace
}  // namespace regcache::upstream
