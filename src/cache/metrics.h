// Counters and gauges for GET /metrics, rendered in the Prometheus text format.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <map>
#include <mutex>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cache/top_counter.h"

namespace regcache::cache {

// The kinds and results of client requests that are counted lock-free (see Metrics::Request).
inline constexpr const char* kRequestKinds[] = {"manifest", "blob"};
inline constexpr const char* kRequestResults[] = {"hit",       "miss",     "stale", "revalidated",
                                                  "coalesced", "negative", "error", "backing"};
inline constexpr int kRequestKindCount = 2, kRequestResultCount = 8;

// What one upstream's clients asked for and got, for the status page and /metrics. One block per
// upstream name for the life of the Metrics: relaxed atomics on the request path.
struct UpstreamStats {
  explicit UpstreamStats(size_t top_capacity) : pulls(top_capacity) {}
  std::atomic<uint64_t> requests[kRequestKindCount][kRequestResultCount] = {};
  std::atomic<uint64_t> bytes_served{0};   // manifest and blob bytes sent to clients
  std::atomic<uint64_t> bytes_fetched{0};  // bytes received from the upstream into the cache
  TopCounter pulls;                        // manifest GETs per repository

  // Requests answered: every result but "negative" (a remembered 404 is counted as an error
  // too). Hits: answered from the store (hit, revalidated, stale).
  uint64_t Requests() const;
  uint64_t Hits() const;
  // Requests of either kind with this result ("error", …).
  uint64_t Results(std::string_view result) const;
};

class Metrics {
 public:
  // requests{kind="manifest|blob",
  //          result="hit|miss|stale|revalidated|coalesced|negative|error|backing"}
  // Lock-free for these kinds and results: it runs on every hit. With `up`, also counted for
  // that upstream.
  void Request(const std::string& kind, const std::string& result, UpstreamStats* up = nullptr);
  // Bytes sent to clients / received from an upstream, in total and for `up` (may be null).
  void Served(UpstreamStats* up, uint64_t bytes);
  void Fetched(UpstreamStats* up, uint64_t bytes);
  // The counters of the upstream named `name`, created on first use; the address stays valid
  // for the life of the Metrics (an upstream replaced by one of the same name keeps them).
  UpstreamStats* ForUpstream(const std::string& name);
  // Every upstream's counters so far, by name.
  std::vector<std::pair<std::string, UpstreamStats*>> Upstreams();
  // upstream_requests{upstream, method, status}
  void UpstreamRequest(const std::string& upstream, const std::string& method, long status);
  void SetRateLimitRemaining(const std::string& upstream, int64_t remaining);
  // Any other counter or labelled gauge (names must be in the help table in metrics.cc).
  void Count(const std::string& name, const std::string& labels, uint64_t by = 1);
  void SetGauge(const std::string& name, const std::string& labels, int64_t value);

  std::atomic<uint64_t> bytes_served{0};
  std::atomic<uint64_t> bytes_fetched{0};
  std::atomic<int64_t> fills_in_flight{0};
  std::atomic<int64_t> fill_waiters{0};
  std::atomic<int64_t> connections{0};
  std::atomic<int64_t> store_bytes{0};  // blobs and manifests, plus the metadata database
  std::atomic<int64_t> metadata_bytes{0};
  std::atomic<int64_t> store_blobs{0};
  std::atomic<int64_t> store_cap_bytes{0};
  std::atomic<uint64_t> passthrough{0};

  std::string Render();

  // Reads a counter by its rendered name and labels, for tests: e.g.
  // Get("regcache_requests_total", "kind=\"blob\",result=\"hit\"").
  uint64_t Get(const std::string& name, const std::string& labels);

 private:
  void RenderUpstreams(std::ostream& out);

  std::mutex mu_;
  std::map<std::pair<std::string, std::string>, uint64_t> counters_;  // (name, labels) -> value
  std::map<std::string, int64_t> ratelimit_;
  std::map<std::pair<std::string, std::string>, int64_t> gauges_;
  std::map<std::string, std::unique_ptr<UpstreamStats>> upstreams_;
  static constexpr int kKinds = kRequestKindCount, kResults = kRequestResultCount;
  std::atomic<uint64_t> requests_[kKinds][kResults] = {};
};

}  // namespace regcache::cache
