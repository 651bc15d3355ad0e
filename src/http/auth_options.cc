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
  if (o.max_failures < 1) return InvalidArgument("auth.max_failures must be at least 1");
  if (o.failure_window.count() < 1 || o.lockout.count() < 1) {
    return InvalidArgument("auth.failure_window and auth.lockout must be at least 1s");
  }
  if (o.max_verified < 1 || o.max_tracked_addresses < 1) {
    return InvalidArgument("auth: cache sizes must be at least 1");
  }
  return Status::Ok();
}

}  // namespace regcache::http
