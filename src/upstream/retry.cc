#include "upstream/retry.h"

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
  value = Trim(value);
  if (value.empty()) return std::nullopt;
  if (auto n = ParseUint(value)) return std::chrono::seconds(static_cast<int64_t>(*n));
  std::tm tm{};
  std::string s(value);
  if (!strptime(s.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm)) return std::nullopt;
  time_t when = timegm(&tm);
  auto delta = std::chrono::system_clock::from_time_t(when) - now;
  if (delta.count() < 0) return std::chrono::seconds(0);
  return std::chrono::duration_cast<std::chrono::seconds>(delta);
}

}  // namespace regcache::upstream
