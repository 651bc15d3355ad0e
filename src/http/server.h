// The registry HTTP server of `regcache serve`: the read side of the OCI distribution API in
// front of a PullThroughCache, plus /metrics and /healthz; optionally behind Basic
// authentication, and only for the repositories each upstream's allow/deny lists let through.
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
#include "http/tls.h"

namespace regcache::http {

struct ServerOptions {
  std::string host = "0.0.0.0";
  uint16_t port = 5000;  // 0: any free port (see Server::port)
  int io_threads = 2;
  // Threads for local lookups that miss the in-memory index (SQLite, blob files). Upstream work
  // never runs here: each upstream has its own threads (cache::UpstreamPolicy).
  int worker_threads = 4;
  std::chrono::seconds shutdown_grace{30};
  std::chrono::seconds idle_timeout{120};  // keep-alive: how long a connection may sit unused
  // A client that takes nothing from its socket for this long is dropped (frees what it pins).
  std::chrono::seconds write_timeout{30};
  // Connections beyond this are answered 503 and closed; 0: DefaultMaxConnections.
  size_t max_connections = 0;
  // How long the first request for a stale tag waits for its revalidation before it is served
  // the cached copy; every other request for the tag meanwhile is served at once.
  std::chrono::milliseconds revalidate_wait{100};
  // How long a client waits for an upstream to begin sending a blob it asked for.
  std::chrono::seconds fill_start_timeout{60};
  size_t max_header_bytes = 16 * 1024;
  bool access_log = true;
  // Called on SIGHUP (live reload), on a worker thread, after the TLS files were re-read; the
  // server keeps serving meanwhile.
  std::function<void()> on_reload;
  // With a certificate and key: the listener speaks HTTPS only (docs/serve.md, "TLS").
  TlsOptions tls;
};

class Server {
 public:
  virtual ~Server() = default;
  // The bound port (useful with port 0).
  virtual uint16_t port() const = 0;
  // Serves until SIGTERM/SIGINT or Stop(): then stops accepting, closes idle connections, and
  // lets running transfers finish for up to shutdown_grace. Before returning, it cancels and
  // drains all upstream work (about a second), so nothing still running can touch the server.
  virtual void Run() = 0;
  virtual void Stop() = 0;
  // Serves the certificate files in `tls` from now on (e.g. after a configuration reload), once
  // they load; until then, and if they fail to, the current ones (logged either way). Only for a
  // server started with TLS: TLS is turned on or off by a restart.
  virtual Status ReloadTls(const TlsOptions& tls) = 0;
};

class Authenticator;

// What one open connection may hold, for the default connection cap: about 8 KiB measured for
// an idle plain one and 75 KiB for an idle TLS one (OpenSSL's and Asio's buffers), with room for
// a request in progress.
inline constexpr uint64_t kConnectionBytes = 16 * 1024;
inline constexpr uint64_t kTlsConnectionBytes = 128 * 1024;
// The share of memory that connections may take at the default cap: a quarter.
inline constexpr uint64_t kConnectionMemoryShare = 4;

// The connection cap when max_connections is 0: the smaller of what `descriptors` (the
// RLIMIT_NOFILE soft limit) leaves after 1024 for files and upstreams (half of it, below 2048),
// and what a quarter of `memory_bytes` (physical memory, or the cgroup's limit) holds at
// kConnectionBytes each (kTlsConnectionBytes with `tls`); at least 64 by memory.
size_t DefaultMaxConnections(uint64_t descriptors, uint64_t memory_bytes, bool tls);

// Binds the listening socket. kInvalidArgument for a bad address, kIoError if it cannot bind.
// With `auth`, requests need credentials (see http/auth.h); without, access is anonymous.
Result<std::unique_ptr<Server>> CreateServer(ServerOptions options, cache::PullThroughCache& cache,
                                             cache::UpstreamSet& upstreams, cache::Metrics& metrics,
                                             std::shared_ptr<Authenticator> auth = nullptr);

}  // namespace regcache::http
