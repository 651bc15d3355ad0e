// ValidateAuthOptions on its own: the serve config loader (and its fuzz target) needs it without
// the rest of authentication (bcrypt, OpenSSL, threads).
#include "base/strings.h"
#include "http/auth.h"

namespace regcache::http {

Status ValidateAuthOptions(const AuthOptions& o) {
  if (o.htpasswd.empty()) return InvalidArgument("auth.htpasswd: a file is required");
  if (o.realm.empty()) return InvalidArgument("auth.realm must not be empty");
  for (char c : o.realm) {
    if (c == '"' || c == '\\' || static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return InvalidArgument("auth.realm must not contain quotes, backslashes or control "
                             "characters");
    }
  }
  for (const auto& p : o.anonymous) {
    if (!StartsWith(p, "/") || p.find('?') != std::string::npos) {
      return InvalidArgument("auth.anonymous: '" + p + "' is not a path such as /metrics");
    }
    if (p == "/v2" || StartsWith(p, "/v2/")) {
      return InvalidArgument("auth.anonymous: registry paths (" + p +
                             ") always need credentials when auth is on");
    }
  }
  if (o.user_failures < 0 || o.user_failures > 1000) {
    return InvalidArgument("auth.user_failures must be between 0 and 1000");
  }
  if (o.address_failures < 1 || o.address_failures > 100000) {
    return InvalidArgument("auth.address_failures must be between 1 and 100000");
  }
  if (o.failure_delay.count() < 1) return InvalidArgument("auth.failure_delay must be at least 1s");
  if (o.max_failure_delay < o.failure_delay) {
    return InvalidArgument("auth.max_failure_delay must be at least auth.failure_delay");
  }
  if (o.max_failure_delay > std::chrono::hours(24)) {
    return InvalidArgument("auth.max_failure_delay must be at most 24h");
  }
  if (o.failure_window.count() < 1)
    return InvalidArgument("auth.failure_window must be at least 1s");
  if (o.verified_ttl.count() < 1) return InvalidArgument("auth.verified_ttl must be at least 1s");
  if (o.max_verified < 1 || o.max_tracked_addresses < 1) {
    return InvalidArgument("auth: cache sizes must be at least 1");
  }
  return Status::Ok();
}

}  // namespace regcache::http
