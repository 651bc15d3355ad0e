// Configuration of `regcache serve`: a YAML file (--config) and/or flags. See docs/serve.md.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "cache/backing.h"
#include "cache/evictor.h"
#include "cache/pull_through.h"
#include "cache/upstream_set.h"
#include "http/auth.h"
#include "http/server.h"

namespace regcache::app {

// The backing registry (shared second tier): how to reach it, and how to copy to it.
struct BackingConfig {
  cache::UpstreamConfig registry;  // name "backing"; url without the prefix; credentials, TLS
  cache::BackingOptions options;   // prefix, copy threads, queue bound
};

// The server defaults for `regcache serve`: one event loop per CPU this process may use
// (affinity mask and cgroup quota), since a loop time-sharing a core with another waits out the
// other's time slices.
http::ServerOptions DefaultServerOptions();

struct ServeConfig {
  http::ServerOptions server = DefaultServerOptions();
  std::string data_dir = "./regcache-data";
  std::vector<cache::UpstreamConfig> upstreams = cache::EmbeddedUpstreams();
  std::string default_upstream = "docker.io";
  cache::UpstreamPolicy policy;   // per-upstream threads, deadlines, breaker
  cache::CacheOptions cache;      // negative caching, revalidation back-off
  cache::StorageLimits storage;   // size cap, watermarks, metadata retention
  std::optional<BackingConfig> backing;
  // Reads the configuration again (the file and the flags over it) for a live reload on SIGHUP;
  // empty: nothing to reload from.
  std::function<Status(ServeConfig*)> reload;
  http::AuthOptions auth;         // htpasswd empty: anonymous access
  std::string log_level = "info";
};

// Parses "HOST:PORT", ":PORT" (all interfaces) or "[v6]:PORT".
Status ParseListen(const std::string& text, http::ServerOptions* out);

// Applies a YAML document over `config`. Unknown keys are errors; messages name the key.
Status LoadServeConfig(const std::string& yaml_text, ServeConfig* config);

// Parses "https://HOST[:PORT]/PREFIX" for --backing (and backing.url): the registry's URL and
// the repository prefix in it (may be empty).
Result<BackingConfig> ParseBackingUrl(const std::string& text);

// Parses "NAME=URL" for --upstream.
Result<cache::UpstreamConfig> ParseUpstreamFlag(const std::string& text);

}  // namespace regcache::app
