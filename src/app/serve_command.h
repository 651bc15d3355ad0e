// `regcache serve`: wires storage, metadata, upstreams, the cache and the HTTP server.
#pragma once

#include "app/serve_config.h"

namespace regcache::app {

// Runs until SIGTERM/SIGINT. Returns the process exit code.
int RunServe(const ServeConfig& config);

}  // namespace regcache::app
