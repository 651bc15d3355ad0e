#include "cache/traffic_history.h"

#include <algorithm>

namespace regcache::cache {
namespace {

const TrafficHistory::Counters* Find(const TrafficHistory::Sample& s, const std::string& name) {
  for (const auto& [n, c] : s.upstreams) {
    if (n == name) return &c;
  }
  return nullptr;
}

uint64_t Minus(uint64_t a, uint64_t b) { return a > b ? a - b : 0; }

}  // namespace

TrafficHistory::Counters TrafficHistory::Delta(const Sample& from, const Sample& to,
                                               const std::string& upstream) {
  Counters d;
  const Counters* b = Find(to, upstream);
  if (!b) return d;
  const Counters zero;
  const Counters* a = Find(from, upstream);
  if (!a) a = &zero;
  d.requests = Minus(b->requests, a->requests);
  d.hits = std::min(Minus(b->hits, a->hits), d.requests);
  d.bytes_served = Minus(b->bytes_served, a->bytes_served);
  d.bytes_fetched = Minus(b->bytes_fetched, a->bytes_fetched);
  return d;
}

TrafficHistory::TrafficHistory(size_t capacity) : capacity_(std::max<size_t>(2, capacity)) {}

void TrafficHistory::Add(Sample sample) {
  std::lock_guard<std::mutex> lock(mu_);
  samples_.push_back(std::move(sample));
  while (samples_.size() > capacity_) samples_.pop_front();
}

std::vector<TrafficHistory::Sample> TrafficHistory::Samples() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {samples_.begin(), samples_.end()};
}

}  // namespace regcache::cache
