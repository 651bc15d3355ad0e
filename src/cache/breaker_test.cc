#include "cache/breaker.h"

#include <gtest/gtest.h>

#include "upstream/registry_client.h"

namespace regcache::cache {
namespace {

using namespace std::chrono_literals;

class BreakerTest : public ::testing::Test {
 protected:
  std::chrono::steady_clock::time_point now_ = std::chrono::steady_clock::time_point() + 1h;
  CircuitBreaker breaker_{"hub", BreakerOptions{3, 5000ms, 20000ms, 600000ms},
                          [this] { return now_; }};
};

TEST_F(BreakerTest, OpensAfterConsecutiveFailuresOnly) {
  EXPECT_TRUE(breaker_.Admit().ok());
  breaker_.Record(Unavailable("timeout"));
  breaker_.Record(Unavailable("timeout"));
  breaker_.Record(NotFound("no such tag"));  // an answer: the upstream is alive
  breaker_.Record(Unavailable("timeout"));
  breaker_.Record(Unavailable("timeout"));
  EXPECT_EQ(breaker_.state(), CircuitBreaker::State::kClosed);
  breaker_.Record(Unavailable("timeout"));
  EXPECT_EQ(breaker_.state(), CircuitBreaker::State::kOpen);
  Status s = breaker_.Admit();
  EXPECT_EQ(s.code(), Code::kUnavailable);
  EXPECT_EQ(upstream::RetryAfterSeconds(s), 5);
}

TEST_F(BreakerTest, HalfOpenAdmitsOneProbeAndBacksOffWhenItFails) {
  for (int i = 0; i < 3; ++i) breaker_.Record(Unavailable("down"));
  now_ += 5001ms;
  EXPECT_EQ(breaker_.state(), CircuitBreaker::State::kHalfOpen);
  EXPECT_TRUE(breaker_.Admit().ok());     // the probe
  EXPECT_FALSE(breaker_.Admit().ok());    // everyone else waits for it
  breaker_.Record(Unavailable("still down"));
  EXPECT_EQ(breaker_.state(), CircuitBreaker::State::kOpen);
  EXPECT_EQ(breaker_.RetryAfterSeconds(), 10);  // doubled
  now_ += 10001ms;
  EXPECT_TRUE(breaker_.Admit().ok());
  breaker_.Record(Unavailable("still down"));
  EXPECT_EQ(breaker_.RetryAfterSeconds(), 20);  // capped at max_open_for
  now_ += 20001ms;
  EXPECT_TRUE(breaker_.Admit().ok());
  breaker_.Record(Status::Ok());
  EXPECT_EQ(breaker_.state(), CircuitBreaker::State::kClosed);
  EXPECT_TRUE(breaker_.Admit().ok());
  EXPECT_TRUE(breaker_.Admit().ok());
}

TEST_F(BreakerTest, RateLimitOpensAtOnceForRetryAfterAndIsRepeated) {
  breaker_.Record(upstream::WithRetryAfter(Status(Code::kRateLimited, "429"), 120));
  Status s = breaker_.Admit();
  EXPECT_EQ(s.code(), Code::kRateLimited);
  EXPECT_EQ(upstream::RetryAfterSeconds(s), 120);
  now_ += 60s;
  EXPECT_EQ(upstream::RetryAfterSeconds(breaker_.Admit()), 60);
}

TEST_F(BreakerTest, ShutdownAbortsAreNotFailures) {
  for (int i = 0; i < 10; ++i) breaker_.Record(Status(Code::kAborted, "shutting down"));
  EXPECT_EQ(breaker_.state(), CircuitBreaker::State::kClosed);
}

TEST_F(BreakerTest, LostProbeDoesNotKeepTheBreakerShut) {
  for (int i = 0; i < 3; ++i) breaker_.Record(Unavailable("down"));
  now_ += 6s;
  EXPECT_TRUE(breaker_.Admit().ok());  // probe never reports back
  now_ += 30s;
  EXPECT_FALSE(breaker_.Admit().ok());
  now_ += 31s;
  EXPECT_TRUE(breaker_.Admit().ok());
}

}  // namespace
}  // namespace regcache::cache
