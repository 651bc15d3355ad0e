// Configuration of `regcache serve`: a YAML file (--config) and/or flags. See docs/serve.md.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"
#include "cache/evictor.h"
#include "cache/pull_through.h"
#include "cache/upstream_set.h"
#include "http/server.h"

namespace regcache::app {

struct ServeConfig {
  http::ServerOptions server;
  std::string data_dir = "./regcache-data";
  std::vector<cache::UpstreamConfig> upstreams = cache::EmbeddedUpstreams();
  std::string default_upstream = "docker.io";
  cache::UpstreamPolicy policy;   // per-upstream threads, deadlines, breaker
  cache::CacheOptions cache;      // negative caching, revalidation back-off
  cache::StorageLimits storage;   // size cap, watermarks, metadata retention
  std::string log_level = "info";
};

// Parses "HOST:PORT", ":PORT" (all interfaces) or "[v6]:PORT".
Status ParseListen(const std::string& text, http::ServerOptions* out);

// Applies a YAML document over `config`. Unknown keys are errors; messages name the key.
Status LoadServeConfig(const std::string& yaml_text, ServeConfig* config);

// Parses "NAME=URL" for --upstream.
Result<cache::UpstreamConfig> ParseUpstreamFlag(const std::string& text);

}  // namespace regcache::app
