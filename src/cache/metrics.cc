#include "cache/metrics.h"

#include <algorithm>
#include <sstream>
#include <string_view>

namespace regcache::cache {
namespace {

struct Help {
  const char* name;
  const char* type;
  const char* text;
};

// Every labelled series rendered, in output order.
constexpr Help kHelp[] = {
    {"regcache_requests_total", "counter",
     "Client requests by kind and cache result (negative: a remembered upstream 404)."},
    {"regcache_upstream_requests_total", "counter",
     "Requests sent upstream by method and status (0: no response)."},
    {"regcache_upstream_refused_total", "counter",
     "Upstream calls not made: reason=breaker (circuit open) or overload (queue full)."},
    {"regcache_upstream_breaker_state", "gauge",
     "Circuit breaker per upstream: 0 closed, 1 open, 2 half-open."},
    {"regcache_upstream_queue", "gauge", "Upstream calls queued or running, per upstream."},
    {"regcache_connections_refused_total", "counter",
     "Connections answered 503 and closed because the connection cap was reached."},
    {"regcache_connections_evicted_total", "counter",
     "Idle connections closed to make room for new ones at the connection cap."},
    {"regcache_tls_handshake_failures_total", "counter",
     "TLS handshakes that failed or timed out (the log says why, e.g. an untrusted certificate)."},
    {"regcache_tls_handshakes_evicted_total", "counter",
     "TLS handshakes closed to make room at max_handshakes (clients that stalled mid-handshake)."},
    {"regcache_tls_handshakes_in_progress", "gauge",
     "TLS handshakes past their ClientHello, holding OpenSSL state, when /metrics was read."},
    {"regcache_wrong_protocol_total", "counter",
     "Connections in the other protocol than the port's: received=tls (a ClientHello on a "
     "plain-HTTP port, answered with a TLS alert) or http (plain HTTP on the HTTPS port, 400)."},
    {"regcache_tls_reloads_total", "counter",
     "Certificate reloads (SIGHUP, files changed): ok, or rejected (the current one kept)."},
    {"regcache_tls_certificate_expiry_timestamp_seconds", "gauge",
     "When the certificate being served expires, in seconds since the epoch."},
    {"regcache_evictions_total", "counter", "Blobs evicted, by reason."},
    {"regcache_evicted_bytes_total", "counter", "Bytes evicted, by reason."},
    {"regcache_metadata_expired_total", "counter", "Tag and link records removed by retention."},
    {"regcache_metadata_rebuilds_total", "counter",
     "Times the metadata database was found corrupt, replaced and rebuilt from the blob store."},
    {"regcache_backing_requests_total", "counter",
     "Reads from the backing registry by kind and result (hit, miss, error, corrupt: failed "
     "verification, so that digest is fetched from the upstream)."},
    {"regcache_backing_repairs_total", "counter",
     "Corrupt backing copies written back with the verified bytes: replaced, refused (the "
     "registry would not delete it) or kept (it kept its old data; the log says what to do)."},
    {"regcache_backing_queue", "gauge", "Copies to the backing registry queued or running."},
    {"regcache_backing_uploaded_blobs_total", "counter", "Blobs uploaded to the backing registry."},
    {"regcache_backing_uploaded_bytes_total", "counter", "Bytes uploaded to the backing registry."},
    {"regcache_backing_mounted_blobs_total", "counter",
     "Blobs linked into a backing repository by cross-repository mount (no bytes sent)."},
    {"regcache_backing_pushed_manifests_total", "counter",
     "Manifests pushed to the backing registry, by digest or under a tag."},
    {"regcache_backing_failures_total", "counter",
     "Backing copies that failed (retried) or were given up, by reason."},
    {"regcache_revalidations_total", "counter",
     "Background tag revalidations by outcome (same, moved, gone, failed)."},
    {"regcache_repository_denied_total", "counter",
     "Requests refused 403 DENIED by an upstream's allow/deny lists, per upstream."},
    {"regcache_auth_failures_total", "counter",
     "Failed logins: unknown user, wrong password or malformed Basic credentials."},
    {"regcache_auth_throttled_total", "counter",
     "Requests answered 429 because their user name from their client address, or the address "
     "itself, failed to log in too often (back-off)."},
};

}  // namespace

namespace {
// Repositories counted per upstream for "most pulled" (a key beyond them replaces the least
// counted one).
constexpr size_t kTopRepositories = 64;

int IndexOf(const std::string& value, const char* const* names, int n) {
  for (int i = 0; i < n; ++i) {
    if (value == names[i]) return i;
  }
  return -1;
}
}  // namespace

void Metrics::Count(const std::string& name, const std::string& labels, uint64_t by) {
  std::lock_guard<std::mutex> lock(mu_);
  counters_[{name, labels}] += by;
}

void Metrics::SetGauge(const std::string& name, const std::string& labels, int64_t value) {
  std::lock_guard<std::mutex> lock(mu_);
  gauges_[{name, labels}] = value;
}

namespace {
// Sums an upstream's request counters over the results `counted` accepts.
uint64_t SumResults(const UpstreamStats& stats, bool (*counted)(std::string_view result)) {
  uint64_t n = 0;
  for (int k = 0; k < kRequestKindCount; ++k) {
    for (int r = 0; r < kRequestResultCount; ++r) {
      if (counted(kRequestResults[r])) n += stats.requests[k][r].load(std::memory_order_relaxed);
    }
  }
  return n;
}
}  // namespace

uint64_t UpstreamStats::Requests() const {
  return SumResults(*this, [](std::string_view r) { return r != "negative"; });
}

uint64_t UpstreamStats::Results(std::string_view result) const {
  int r = 0;
  while (r < kRequestResultCount && result != kRequestResults[r]) ++r;
  if (r == kRequestResultCount) return 0;
  uint64_t n = 0;
  for (int k = 0; k < kRequestKindCount; ++k) n += requests[k][r].load(std::memory_order_relaxed);
  return n;
}

uint64_t UpstreamStats::Hits() const {
  return SumResults(
      *this, [](std::string_view r) { return r == "hit" || r == "revalidated" || r == "stale"; });
}

UpstreamStats* Metrics::ForUpstream(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& stats = upstreams_[name];
  if (!stats) stats = std::make_unique<UpstreamStats>(kTopRepositories);
  return stats.get();
}

std::vector<std::pair<std::string, UpstreamStats*>> Metrics::Upstreams() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<std::string, UpstreamStats*>> out;
  for (const auto& [name, stats] : upstreams_) out.emplace_back(name, stats.get());
  return out;
}

void Metrics::Served(UpstreamStats* up, uint64_t bytes) {
  bytes_served.fetch_add(bytes, std::memory_order_relaxed);
  if (up) up->bytes_served.fetch_add(bytes, std::memory_order_relaxed);
}

void Metrics::Fetched(UpstreamStats* up, uint64_t bytes) {
  bytes_fetched.fetch_add(bytes, std::memory_order_relaxed);
  if (up) up->bytes_fetched.fetch_add(bytes, std::memory_order_relaxed);
}

void Metrics::Request(const std::string& kind, const std::string& result, UpstreamStats* up) {
  int k = IndexOf(kind, kRequestKinds, kKinds), r = IndexOf(result, kRequestResults, kResults);
  if (k >= 0 && r >= 0) {
    requests_[k][r].fetch_add(1, std::memory_order_relaxed);
    if (up) up->requests[k][r].fetch_add(1, std::memory_order_relaxed);
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  ++counters_[{"regcache_requests_total", "kind=\"" + kind + "\",result=\"" + result + "\""}];
}

void Metrics::UpstreamRequest(const std::string& upstream, const std::string& method, long status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++counters_[{"regcache_upstream_requests_total", "upstream=\"" + upstream + "\",method=\"" +
                                                       method + "\",status=\"" +
                                                       std::to_string(status) + "\""}];
}

void Metrics::SetRateLimitRemaining(const std::string& upstream, int64_t remaining) {
  std::lock_guard<std::mutex> lock(mu_);
  ratelimit_[upstream] = remaining;
}

uint64_t Metrics::Get(const std::string& name, const std::string& labels) {
  if (name == "regcache_requests_total") {
    for (int k = 0; k < kKinds; ++k) {
      for (int r = 0; r < kResults; ++r) {
        if (labels == std::string("kind=\"") + kRequestKinds[k] + "\",result=\"" +
                          kRequestResults[r] + "\"") {
          return requests_[k][r].load();
        }
      }
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = counters_.find({name, labels});
  return it == counters_.end() ? 0 : it->second;
}

// Per-upstream series (mu_ held): the same requests and bytes as the totals above, by upstream.
void Metrics::RenderUpstreams(std::ostream& out) {
  out << "# HELP regcache_requests_by_upstream_total Client requests by upstream, kind and cache "
         "result.\n# TYPE regcache_requests_by_upstream_total counter\n";
  for (const auto& [name, stats] : upstreams_) {
    for (int k = 0; k < kKinds; ++k) {
      for (int r = 0; r < kResults; ++r) {
        if (uint64_t v = stats->requests[k][r].load()) {
          out << "regcache_requests_by_upstream_total{upstream=\"" << name << "\",kind=\""
              << kRequestKinds[k] << "\",result=\"" << kRequestResults[r] << "\"} " << v << "\n";
        }
      }
    }
  }
  auto bytes = [&](const char* name, const char* help,
                   std::atomic<uint64_t> UpstreamStats::*field) {
    out << "# HELP " << name << " " << help << "\n# TYPE " << name << " counter\n";
    for (const auto& [upstream, stats] : upstreams_) {
      out << name << "{upstream=\"" << upstream << "\"} " << ((*stats).*field).load() << "\n";
    }
  };
  bytes("regcache_bytes_served_by_upstream_total",
        "Bytes of blobs and manifests sent to clients, by upstream.", &UpstreamStats::bytes_served);
  bytes("regcache_bytes_fetched_by_upstream_total",
        "Bytes received from each upstream into the cache.", &UpstreamStats::bytes_fetched);
}

std::string Metrics::Render() {
  std::ostringstream out;
  std::lock_guard<std::mutex> lock(mu_);
  for (int k = 0; k < kKinds; ++k) {
    for (int r = 0; r < kResults; ++r) {
      if (uint64_t v = requests_[k][r].load()) {
        counters_[{"regcache_requests_total", std::string("kind=\"") + kRequestKinds[k] +
                                                  "\",result=\"" + kRequestResults[r] + "\""}] = v;
      }
    }
  }
  for (const auto& h : kHelp) {
    out << "# HELP " << h.name << " " << h.text << "\n# TYPE " << h.name << " " << h.type << "\n";
    auto series = [&out](const std::string& name, const std::string& labels, auto v) {
      out << name;
      if (!labels.empty()) out << "{" << labels << "}";
      out << " " << v << "\n";
    };
    for (const auto& [key, v] : counters_) {
      if (key.first == h.name) series(key.first, key.second, v);
    }
    for (const auto& [key, v] : gauges_) {
      if (key.first == h.name) series(key.first, key.second, v);
    }
  }
  // Unlabelled series: name, type, help, value.
  auto single = [&out](const char* name, const char* type, const char* help, auto value) {
    out << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n"
        << name << " " << value << "\n";
  };
  const uint64_t served = bytes_served.load(), fetched = bytes_fetched.load();
  single("regcache_bytes_served_total", "counter", "Bytes of blobs and manifests sent to clients.",
         served);
  single("regcache_bytes_fetched_total", "counter", "Bytes received from upstreams into the cache.",
         fetched);
  single("regcache_byte_hit_ratio", "gauge",
         "Share of bytes served that did not come from upstream.",
         served == 0
             ? 0.0
             : 1.0 - static_cast<double>(std::min(served, fetched)) / static_cast<double>(served));
  single("regcache_fills_in_flight", "gauge", "Upstream blob fetches running now.",
         fills_in_flight.load());
  single("regcache_fill_waiters", "gauge",
         "Clients streaming from a fill that is still downloading.", fill_waiters.load());
  single("regcache_store_bytes", "gauge",
         "Bytes of committed blobs and manifests and the metadata database (what the cap "
         "bounds).",
         store_bytes.load());
  single("regcache_metadata_bytes", "gauge",
         "Bytes of the metadata database file (counted in regcache_store_bytes).",
         metadata_bytes.load());
  single("regcache_store_blobs", "gauge", "Committed blobs and manifests.", store_blobs.load());
  single("regcache_store_cap_bytes", "gauge", "The size cap of the store.", store_cap_bytes.load());
  single("regcache_passthrough_total", "counter", "Misses served without being stored (no room).",
         passthrough.load());
  single("regcache_connections", "gauge", "Open client connections.", connections.load());
  out << "# HELP regcache_upstream_ratelimit_remaining Last ratelimit-remaining an upstream "
         "reported.\n"
         "# TYPE regcache_upstream_ratelimit_remaining gauge\n";
  for (const auto& [u, v] : ratelimit_) {
    out << "regcache_upstream_ratelimit_remaining{upstream=\"" << u << "\"} " << v << "\n";
  }
  RenderUpstreams(out);
  return out.str();
}

}  // namespace regcache::cache
