#include "upstream/retry.h"

#include <algorithm>
#include <ctime>
#include <random>
#include <string>

#include "base/strings.h"

namespace regcache::upstream {

std::chrono::milliseconds RetryPolicy::Backoff(int retry) const {
  int64_t ms = base_delay.count();
  for (int i = 1; i < retry && ms < max_delay.count(); ++i) ms *= 2;
  ms = std::min<int64_t>(ms, max_delay.count());
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_int_distribution<int64_t> dist(ms / 2, std::max<int64_t>(ms / 2, ms));
  return std::chrono::milliseconds(dist(rng));
}

bool IsRetryableHttpStatus(long status) {
  return status == 408 || status == 429 || status == 500 || status == 502 || status == 503 ||
         status == 504;
}

std::optional<std::chrono::seconds> ParseRetryAfter(std::string_view value,
                                                    std::chrono::system_clock::time_point now) {
  // Longer waits mean the same to every caller ("more than I will wait") and are clamped, so
  // that the value converts to any clock's duration without overflow.
  constexpr std::chrono::seconds kMax = std::chrono::hours(24 * 365);
  value = Trim(value);
  if (value.empty()) return std::nullopt;
  if (auto n = ParseUint(value)) {
    return std::chrono::seconds(static_cast<int64_t>(std::min<uint64_t>(*n, kMax.count())));
  }
  std::tm tm{};
  std::string s(value);
  if (!strptime(s.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm)) return std::nullopt;
  // In seconds: an HTTP-date's year 0..9999 is outside system_clock's nanosecond range.
  auto delta = std::chrono::seconds(timegm(&tm)) -
               std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch());
  return std::clamp(delta, std::chrono::seconds(0), kMax);
}

}  // namespace regcache::upstream
