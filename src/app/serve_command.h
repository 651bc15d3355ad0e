// `regcache serve`: wires storage, metadata, upstreams, the cache and the HTTP server.
#pragma once

#include "app/serve_config.h"

namespace regcache::app {

// Runs until SIGTERM/SIGINT. Returns the process exit code.
int RunServe(const ServeConfig& config);

// Everything RunServe would refuse at start, without binding, opening the data directory or
// contacting anything: upstream and backing URLs, duplicate names, the default upstream, the
// htpasswd file, the TLS certificate files.
Status CheckServeConfig(const ServeConfig& config);

}  // namespace regcache::app
