// Counters and gauges for GET /metrics, rendered in the Prometheus text format.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>

namespace regcache::cache {

class Metrics {
 public:
  // requests{kind="manifest|blob",
  //          result="hit|miss|stale|revalidated|coalesced|negative|error|backing"}
  // Lock-free for these kinds and results: it runs on every hit.
  void Request(const std::string& kind, const std::string& result);
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
  std::atomic<int64_t> store_bytes{0};
  std::atomic<int64_t> store_blobs{0};
  std::atomic<int64_t> store_cap_bytes{0};
  std::atomic<uint64_t> passthrough{0};

  std::string Render();

  // Reads a counter by its rendered name and labels, for tests: e.g.
  // Get("regcache_requests_total", "kind=\"blob\",result=\"hit\"").
  uint64_t Get(const std::string& name, const std::string& labels);

 private:
  std::mutex mu_;
  std::map<std::pair<std::string, std::string>, uint64_t> counters_;  // (name, labels) -> value
  std::map<std::string, int64_t> ratelimit_;
  std::map<std::pair<std::string, std::string>, int64_t> gauges_;
  static constexpr int kKinds = 2, kResults = 8;
  std::atomic<uint64_t> requests_[kKinds][kResults] = {};
};

}  // namespace regcache::cache
