// Pieces shared by the YAML files regcache reads (the sync file, the serve config): strict keys,
// credentials, durations. yaml-cpp throws; callers catch YAML::Exception where they load a file.
#pragma once

#include <yaml-cpp/yaml.h>

#include <chrono>
#include <optional>
#include <set>
#include <string>

#include "base/status.h"
#include "upstream/auth.h"

namespace regcache::copy {

// kInvalidArgument naming `where` if `node` is not a mapping or has a key outside `allowed`
// (a typo should fail loudly, not be ignored).
Status CheckYamlKeys(const YAML::Node& node, const std::set<std::string>& allowed,
                     const std::string& where);

// `username` with `password` or `password_env` (the name of an environment variable) from a
// mapping; nullopt when there is no username. kInvalidArgument if password_env is unset.
Result<std::optional<upstream::Credentials>> CredentialsFromYaml(const YAML::Node& node,
                                                                 const std::string& where);

// "90", "90s", "10m", "6h" -> seconds.
Result<std::chrono::seconds> ParseDuration(const std::string& text);
// The same, also taking milliseconds ("250ms").
Result<std::chrono::milliseconds> ParseDurationMs(const std::string& text);

}  // namespace regcache::copy
