#include "upstream/auth.h"

#include <algorithm>
#include <cctype>
#include <limits>
#include <nlohmann/json.hpp>

#include "base/strings.h"

namespace regcache::upstream {

std::vector<AuthChallenge> ParseWwwAuthenticate(std::string_view h) {
  std::vector<AuthChallenge> out;
  size_t i = 0;
  auto skip_ws = [&] {
    while (i < h.size() && (h[i] == ' ' || h[i] == '\t')) ++i;
  };
  auto token = [&] {
    size_t start = i;
    while (i < h.size() && h[i] != ' ' && h[i] != '\t' && h[i] != '=' && h[i] != ',') ++i;
    return std::string(h.substr(start, i - start));
  };
  while (i < h.size()) {
    skip_ws();
    while (i < h.size() && (h[i] == ',' || h[i] == ' ')) ++i;
    if (i >= h.size()) break;
    AuthChallenge c;
    c.scheme = ToLower(token());
    if (c.scheme.empty()) break;
    // Parameters until the next "scheme " (a token followed by a space, not '=').
    while (true) {
      skip_ws();
      size_t save = i;
      std::string key = ToLower(token());
      skip_ws();
      if (key.empty() || i >= h.size() || h[i] != '=') {
        i = save;
        break;
      }
      ++i;  // '='
      skip_ws();
      std::string value;
      if (i < h.size() && h[i] == '"') {
        ++i;
        bool closed = false;
        while (i < h.size()) {
          if (h[i] == '\\' && i + 1 < h.size()) {
            value.push_back(h[i + 1]);
            i += 2;
          } else if (h[i] == '"') {
            ++i;
            closed = true;
            break;
          } else {
            value.push_back(h[i++]);
          }
        }
        if (!closed) {
          out.push_back(std::move(c));
          return out;
        }
      } else {
        size_t start = i;
        while (i < h.size() && h[i] != ',') ++i;
        value = std::string(Trim(h.substr(start, i - start)));
      }
      c.params[key] = value;
      skip_ws();
      if (i < h.size() && h[i] == ',') ++i;
    }
    out.push_back(std::move(c));
  }
  return out;
}

Result<Credentials> ParseUserPass(std::string_view text) {
  size_t colon = text.find(':');
  if (colon == std::string_view::npos || colon == 0) {
    return InvalidArgument("credentials must be given as USER:PASS");
  }
  Credentials c;
  c.username = std::string(text.substr(0, colon));
  c.password = std::string(text.substr(colon + 1));
  return c;
}

Result<BearerToken> ParseTokenResponse(std::string_view body,
                                       std::chrono::steady_clock::time_point now) {
  auto doc = nlohmann::json::parse(body.begin(), body.end(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) {
    return Status(Code::kUnauthenticated, "token server answered with something that is not JSON");
  }
  BearerToken t;
  for (const char* key : {"token", "access_token"}) {
    auto it = doc.find(key);
    if (it != doc.end() && it->is_string() && !it->get<std::string>().empty()) {
      t.value = it->get<std::string>();
      break;
    }
  }
  if (t.value.empty()) {
    return Status(Code::kUnauthenticated, "token server answered without a token");
  }
  // At least 60 s (the token spec); at most a day, so that any value fits the clock (a token
  // that really lives longer is just fetched again).
  int64_t expires_in = 60;
  if (auto it = doc.find("expires_in"); it != doc.end() && it->is_number_integer()) {
    constexpr int64_t kDay = 24 * 3600;
    expires_in = it->is_number_unsigned()
                     ? static_cast<int64_t>(std::min<uint64_t>(it->get<uint64_t>(), kDay))
                     : it->get<int64_t>();
    expires_in = std::clamp<int64_t>(expires_in, 60, kDay);
  }
  // Renew 10 s early so a token never expires in flight.
  t.expires_at = now + std::chrono::seconds(expires_in - 10);
  return t;
}

RateLimitValue ParseRateLimitHeader(std::string_view value) {
  // A number past int64 is as unknown as junk (-1), never negative.
  auto parse = [](std::string_view text, int64_t* out) {
    auto n = ParseUint(text);
    if (n && *n <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      *out = static_cast<int64_t>(*n);
    }
  };
  RateLimitValue v;
  auto parts = Split(value, ';');
  if (parts.empty()) return v;
  parse(Trim(parts[0]), &v.count);
  for (size_t i = 1; i < parts.size(); ++i) {
    std::string_view p = Trim(parts[i]);
    if (StartsWith(p, "w=")) parse(p.substr(2), &v.window_s);
  }
  return v;
}

}  // namespace regcache::upstream
