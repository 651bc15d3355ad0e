// Retry policy for registry requests: jittered exponential backoff, honouring Retry-After.
#pragma once

#include <chrono>
#include <optional>
#include <string_view>

namespace regcache::upstream {

struct RetryPolicy {
  int max_attempts = 4;  // total tries per request, including the first
  std::chrono::milliseconds base_delay{300};
  std::chrono::milliseconds max_delay{10000};
  // A 429 asking us to wait longer than this is reported instead of waited out.
  std::chrono::seconds max_retry_after{60};
  // false: a 429 is reported at once, never slept on (a server must not park a thread on it).
  bool retry_rate_limited = true;
  // No retry starts once this much time has passed since the first attempt (0: no limit). Keeps
  // one logical request within a caller's deadline.
  std::chrono::milliseconds max_elapsed{0};

  // Delay before retry number `retry` (1-based): base * 2^(retry-1), capped, with "full jitter"
  // between half and all of it, so parallel clients do not retry in lockstep.
  std::chrono::milliseconds Backoff(int retry) const;
};

// Statuses worth retrying: 408, 429, 500, 502, 503, 504.
bool IsRetryableHttpStatus(long status);

// Parses Retry-After as delta-seconds or an HTTP-date (relative to `now`); nullopt if neither.
std::optional<std::chrono::seconds> ParseRetryAfter(std::string_view value,
                                                    std::chrono::system_clock::time_point now);

}  // namespace regcache::upstream
