// The status page at GET /: what the cache is doing, for a person with a browser. One
// server-rendered HTML document: inline CSS, inline SVG charts, no script and no external asset,
// so it works with JavaScript off and behind any firewall. Every value that came from outside
// (repository names, upstream names, rate-limit sources) is escaped.
//
// Figures per upstream: client requests and their hit ratio (answered from the store: hit,
// revalidated, stale), bytes served to clients and fetched from the upstream, the last
// rate-limit headers it sent, its circuit breaker and queue. Also: blob downloads in flight with
// their progress, storage used against the cap, the most pulled repositories (manifest GETs,
// counted in bounded memory), uptime and version, and charts of the last hour (hit ratio and
// traffic per upstream) drawn from samples taken every kSampleEvery.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "cache/metrics.h"
#include "cache/pull_through.h"
#include "cache/traffic_history.h"
#include "cache/upstream_set.h"

namespace regcache::http {

// Everything the page shows, gathered at one moment.
struct StatusSnapshot {
  struct Upstream {
    std::string name;
    bool is_default = false;
    uint64_t requests = 0, hits = 0, misses = 0, errors = 0;  // misses: fetched or joined a fill
    uint64_t bytes_served = 0, bytes_fetched = 0;
    upstream::RateLimitInfo rate_limit;  // -1: never reported
    cache::CircuitBreaker::State breaker = cache::CircuitBreaker::State::kClosed;
    int64_t retry_after_s = 0;  // while the breaker is open
    size_t queued = 0;          // upstream calls queued or running
  };
  struct Pulled {
    std::string upstream, repository;
    uint64_t count = 0, error = 0;  // manifest GETs: between count - error and count
  };

  std::string version;
  int64_t uptime_s = 0;
  std::string generated_at;  // UTC, ISO 8601
  std::vector<Upstream> upstreams;
  std::vector<cache::FillProgress> fills;  // the first few in flight
  int64_t fills_in_flight = 0, fill_waiters = 0;
  int64_t store_bytes = 0, store_blobs = 0, store_cap_bytes = 0;
  std::string storage_degraded;  // empty when healthy
  int64_t connections = 0;
  std::vector<Pulled> most_pulled;
  // Oldest first, ending with a sample taken now.
  std::vector<cache::TrafficHistory::Sample> history;
};

// The HTML document for `s`.
std::string RenderStatusPage(const StatusSnapshot& s);

// `text` with & < > " ' replaced by character references: safe in element content and in
// quoted attribute values.
std::string HtmlEscape(std::string_view text);

class StatusPage {
 public:
  static constexpr std::chrono::seconds kSampleEvery{15};
  static constexpr std::chrono::seconds kHistory{3600};

  StatusPage(cache::Metrics& metrics, cache::UpstreamSet& upstreams, cache::PullThroughCache& cache);

  // Records the counters for the charts; call every kSampleEvery (cheap: atomic loads).
  void Sample();
  StatusSnapshot Snapshot();
  std::string Render() { return RenderStatusPage(Snapshot()); }

 private:
  cache::TrafficHistory::Sample Counters();

  cache::Metrics& metrics_;
  cache::UpstreamSet& upstreams_;
  cache::PullThroughCache& cache_;
  const std::chrono::steady_clock::time_point started_;
  cache::TrafficHistory history_;
};

}  // namespace regcache::http
