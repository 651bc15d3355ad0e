// The registry HTTP server of `regcache serve`: the read side of the OCI distribution API in
// front of a PullThroughCache, plus /metrics and /healthz.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "base/status.h"
#include "cache/metrics.h"
#include "cache/pull_through.h"
#include "cache/upstream_set.h"

namespace regcache::http {

struct ServerOptions {
  std::string host = "0.0.0.0";
  uint16_t port = 5000;  // 0: any free port (see Server::port)
  int io_threads = 2;
  int worker_threads = 16;  // for blocking cache calls (upstream HEADs, SQLite)
  std::chrono::seconds shutdown_grace{30};
  std::chrono::seconds idle_timeout{120};  // keep-alive and stalled-client limit
  size_t max_header_bytes = 16 * 1024;
  bool access_log = true;
};

class Server {
 public:
  virtual ~Server() = default;
  // The bound port (useful with port 0).
  virtual uint16_t port() const = 0;
  // Serves until SIGTERM/SIGINT or Stop(): then stops accepting, closes idle connections, and
  // lets running transfers finish for up to shutdown_grace.
  virtual void Run() = 0;
  virtual void Stop() = 0;
};

// Binds the listening socket. kInvalidArgument for a bad address, kIoError if it cannot bind.
Result<std::unique_ptr<Server>> CreateServer(ServerOptions options, cache::PullThroughCache& cache,
                                             cache::UpstreamSet& upstreams,
                                             cache::Metrics& metrics);

}  // namespace regcache::http
