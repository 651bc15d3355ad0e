// Registry authentication pieces: WWW-Authenticate challenges, token-server responses, and
// credentials. Pure functions; the registry client drives the flow.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace regcache::upstream {

struct AuthChallenge {
  std::string scheme;                         // lowercase: "bearer", "basic"
  std::map<std::string, std::string> params;  // lowercase keys: realm, service, scope, error
  std::string Param(const std::string& key) const {
    auto it = params.find(key);
    return it == params.end() ? "" : it->second;
  }
};

// Parses one WWW-Authenticate header value (which may hold several challenges). Quoted values
// may contain commas and escaped quotes. Malformed input yields whatever parsed cleanly before it.
std::vector<AuthChallenge> ParseWwwAuthenticate(std::string_view header);

struct Credentials {
  std::string username;
  std::string password;
  // docker config "identitytoken" / helper Username "<token>": an OAuth refresh token.
  std::string identity_token;
  bool empty() const { return username.empty() && password.empty() && identity_token.empty(); }
};

// Parses "USER:PASS" (the password may contain ':'); kInvalidArgument if no ':' or empty user.
Result<Credentials> ParseUserPass(std::string_view text);

struct BearerToken {
  std::string value;
  std::chrono::steady_clock::time_point expires_at;
};

// Parses a token server's JSON answer: `token` or `access_token`; `expires_in` defaults to 60 s
// and is never taken as less than 60 s (per the token spec). kUnauthenticated if no token.
Result<BearerToken> ParseTokenResponse(std::string_view body,
                                       std::chrono::steady_clock::time_point now);

// Docker Hub's rate-limit headers: "100;w=21600".
struct RateLimitValue {
  int64_t count = -1;
  int64_t window_s = -1;
};
RateLimitValue ParseRateLimitHeader(std::string_view value);

}  // namespace regcache::upstream
