// Fuzzes what the registry client parses out of upstream responses, all on the input as text:
// WWW-Authenticate challenges, token-server JSON, Docker Hub's ratelimit-* headers and
// Retry-After (delta-seconds or HTTP-date).
#include <cctype>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "check.h"
#include "upstream/auth.h"
#include "upstream/retry.h"

namespace upstream = regcache::upstream;

namespace {

bool IsLower(std::string_view s) {
  for (unsigned char c : s) {
    if (std::tolower(c) != c) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);

  for (const auto& c : upstream::ParseWwwAuthenticate(text)) {
    FUZZ_CHECK(!c.scheme.empty() && IsLower(c.scheme));
    for (const auto& [key, value] : c.params) FUZZ_CHECK(!key.empty() && IsLower(key));
    FUZZ_CHECK(c.Param("").empty());
  }

  // A steady clock reading like a long-running process's, and a fixed wall clock (2023-11-14).
  const auto steady_now = std::chrono::steady_clock::time_point(std::chrono::hours(24 * 365));
  if (auto t = upstream::ParseTokenResponse(text, steady_now); t.ok()) {
    FUZZ_CHECK(!t->value.empty());
    // Never less than 60 s, renewed 10 s early.
    FUZZ_CHECK(t->expires_at - steady_now >= std::chrono::seconds(50));
  }

  auto rl = upstream::ParseRateLimitHeader(text);
  FUZZ_CHECK(rl.count >= -1);
  FUZZ_CHECK(rl.window_s >= -1);

  const auto wall_now = std::chrono::system_clock::from_time_t(1700000000);
  if (auto ra = upstream::ParseRetryAfter(text, wall_now)) {
    FUZZ_CHECK(ra->count() >= 0);
    // What the client does with it: compare with its limit, then wait it out in milliseconds.
    if (*ra <= upstream::RetryPolicy().max_retry_after) {
      FUZZ_CHECK(std::chrono::duration_cast<std::chrono::milliseconds>(*ra).count() >= 0);
    }
  }
  return 0;
}
