#include "copy/yaml_config.h"

#include <cstdlib>

#include "base/strings.h"

namespace regcache::copy {

Status CheckYamlKeys(const YAML::Node& node, const std::set<std::string>& allowed,
                     const std::string& where) {
  if (!node.IsMap()) return InvalidArgument(where + " must be a mapping");
  for (const auto& kv : node) {
    std::string key = kv.first.as<std::string>();
    if (!allowed.count(key)) return InvalidArgument(where + ": unknown key '" + key + "'");
  }
  return Status::Ok();
}

Result<std::optional<upstream::Credentials>> CredentialsFromYaml(const YAML::Node& node,
                                                                 const std::string& where) {
  if (!node["username"]) return std::optional<upstream::Credentials>();
  upstream::Credentials cred;
  cred.username = node["username"].as<std::string>();
  if (node["password"]) cred.password = node["password"].as<std::string>();
  if (node["password_env"]) {
    std::string var = node["password_env"].as<std::string>();
    const char* v = std::getenv(var.c_str());
    if (!v) return InvalidArgument(where + ".password_env: $" + var + " is not set");
    cred.password = v;
  }
  return std::optional<upstream::Credentials>(cred);
}

Result<std::chrono::milliseconds> ParseDurationMs(const std::string& text) {
  std::string_view t = Trim(text);
  if (EndsWith(t, "ms")) {
    auto n = ParseUint(t.substr(0, t.size() - 2));
    if (!n) return InvalidArgument("invalid duration '" + text + "' (use 250ms, 90s, 10m or 6h)");
    if (*n > 315360000000ull) return InvalidArgument("duration '" + text + "' is too long");
    return std::chrono::milliseconds(static_cast<int64_t>(*n));
  }
  RC_ASSIGN_OR_RETURN(auto s, ParseDuration(text));
  return std::chrono::duration_cast<std::chrono::milliseconds>(s);
}

Result<std::chrono::seconds> ParseDuration(const std::string& text) {
  std::string_view t = Trim(text);
  int64_t mult = 1;
  if (!t.empty() && (t.back() == 's' || t.back() == 'm' || t.back() == 'h')) {
    mult = t.back() == 'h' ? 3600 : t.back() == 'm' ? 60 : 1;
    t.remove_suffix(1);
  }
  auto n = ParseUint(t);
  if (!n) return InvalidArgument("invalid duration '" + text + "' (use 90, 90s, 10m or 6h)");
  // Ten years is more than any setting needs, and keeps the arithmetic far from overflow.
  if (*n > 315360000ull / static_cast<uint64_t>(mult)) {
    return InvalidArgument("duration '" + text + "' is too long");
  }
  return std::chrono::seconds(static_cast<int64_t>(*n) * mult);
}

}  // namespace regcache::copy
