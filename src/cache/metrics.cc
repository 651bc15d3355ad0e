#include "cache/metrics.h"

#include <sstream>

namespace regcache::cache {

void Metrics::Request(const std::string& kind, const std::string& result) {
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
  std::lock_guard<std::mutex> lock(mu_);
  auto it = counters_.find({name, labels});
  return it == counters_.end() ? 0 : it->second;
}

std::string Metrics::Render() {
  std::ostringstream out;
  std::lock_guard<std::mutex> lock(mu_);
  out << "# HELP regcache_requests_total Client requests by kind and cache result.\n"
         "# TYPE regcache_requests_total counter\n";
  for (const auto& [key, v] : counters_) {
    if (key.first == "regcache_requests_total")
      out << key.first << "{" << key.second << "} " << v << "\n";
  }
  out << "# HELP regcache_upstream_requests_total Requests sent upstream by method and status "
         "(0: no response).\n# TYPE regcache_upstream_requests_total counter\n";
  for (const auto& [key, v] : counters_) {
    if (key.first == "regcache_upstream_requests_total")
      out << key.first << "{" << key.second << "} " << v << "\n";
  }
  out << "# HELP regcache_bytes_served_total Bytes of blobs and manifests sent to clients.\n"
         "# TYPE regcache_bytes_served_total counter\nregcache_bytes_served_total "
      << bytes_served.load() << "\n";
  out << "# HELP regcache_bytes_fetched_total Bytes received from upstreams into the cache.\n"
         "# TYPE regcache_bytes_fetched_total counter\nregcache_bytes_fetched_total "
      << bytes_fetched.load() << "\n";
  out << "# HELP regcache_fills_in_flight Upstream blob fetches running now.\n"
         "# TYPE regcache_fills_in_flight gauge\nregcache_fills_in_flight "
      << fills_in_flight.load() << "\n";
  out << "# HELP regcache_fill_waiters Clients streaming from a fill that is still downloading.\n"
         "# TYPE regcache_fill_waiters gauge\nregcache_fill_waiters "
      << fill_waiters.load() << "\n";
  out << "# HELP regcache_connections Open client connections.\n"
         "# TYPE regcache_connections gauge\nregcache_connections "
      << connections.load() << "\n";
  out << "# HELP regcache_upstream_ratelimit_remaining Last ratelimit-remaining an upstream "
         "reported.\n"
         "# TYPE regcache_upstream_ratelimit_remaining gauge\n";
  for (const auto& [u, v] : ratelimit_) {
    out << "regcache_upstream_ratelimit_remaining{upstream=\"" << u << "\"} " << v << "\n";
  }
  return out.str();
}

}  // namespace regcache::cache
