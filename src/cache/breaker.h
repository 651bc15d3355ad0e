// A circuit breaker per upstream. When an upstream keeps failing (timeouts, connection errors,
// 5xx, 429) requests stop going to it for a while, so a dead or rate-limiting upstream costs a
// client nothing but an immediate answer: cached content is served, cold misses fail at once.
//
// closed --(N consecutive failures, or one 429)--> open --(open period over)--> half-open
// half-open --(its one probe succeeds)--> closed;  --(the probe fails)--> open, for twice as long
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <type_traits>

#include "base/status.h"

namespace regcache::cache {

struct BreakerOptions {
  int failures = 3;                             // consecutive failures that open the breaker
  std::chrono::milliseconds open_for{5000};     // first open period
  std::chrono::milliseconds max_open_for{60000};  // open periods double up to this
  std::chrono::milliseconds max_rate_limit_wait{600000};  // cap on an upstream's Retry-After
};

class CircuitBreaker {
 public:
  enum class State { kClosed = 0, kOpen = 1, kHalfOpen = 2 };
  using Clock = std::function<std::chrono::steady_clock::time_point()>;

  // `name` appears in logs and in the errors Admit returns.
  CircuitBreaker(std::string name, BreakerOptions options, Clock clock = nullptr);

  // Ok when a call may go upstream now. While open: kUnavailable, or the upstream's last
  // kRateLimited, carrying "retry after N" (upstream::RetryAfterSeconds). Half-open admits one
  // probe at a time; the caller must Record its outcome.
  Status Admit();
  // What Admit would say, without taking the half-open probe: for callers deciding whether to
  // start upstream work at all (the work itself then goes through Admit).
  Status Check();

  // The outcome of an admitted call. kUnavailable and kRateLimited count as failures (the latter
  // opens at once, for the upstream's Retry-After); kAborted (shutdown) is ignored; anything
  // else, including kNotFound, proves the upstream answers.
  void Record(const Status& outcome);

  // Runs `call` (returning Status or Result<T>) if the breaker admits it, and records how it
  // went; otherwise returns the breaker's refusal without calling.
  template <typename F>
  auto Guard(F&& call) -> decltype(call()) {
    Status admitted = Admit();
    if (!admitted.ok()) return admitted;
    auto result = call();
    if constexpr (std::is_same_v<decltype(result), Status>) {
      Record(result);
    } else {
      Record(result.status());
    }
    return result;
  }

  State state();
  // Seconds until the breaker lets a probe through (0 when closed).
  int64_t RetryAfterSeconds();

 private:
  void Open(std::chrono::milliseconds period, const Status& why);
  Status RefusalLocked(std::chrono::steady_clock::time_point now) const;
  std::chrono::steady_clock::time_point Now() const;

  const std::string name_;
  const BreakerOptions options_;
  const Clock clock_;
  std::mutex mu_;
  State state_ = State::kClosed;
  int consecutive_failures_ = 0;
  std::chrono::milliseconds period_{0};
  std::chrono::steady_clock::time_point open_until_;
  std::chrono::steady_clock::time_point probe_started_;
  bool probe_in_flight_ = false;
  Status last_failure_;
};

}  // namespace regcache::cache
