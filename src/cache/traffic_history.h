// Recent per-upstream traffic for the status page's charts: cumulative counters sampled at a
// fixed period into a ring of bounded size (an hour at one sample every 15 s is 240 samples).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace regcache::cache {

class TrafficHistory {
 public:
  // Counters since start; differences between samples give each interval's figures.
  struct Counters {
    uint64_t requests = 0;  // manifest and blob requests answered
    uint64_t hits = 0;      // of them, from the store
    uint64_t bytes_served = 0;
    uint64_t bytes_fetched = 0;
  };
  struct Sample {
    std::chrono::steady_clock::time_point at;
    std::vector<std::pair<std::string, Counters>> upstreams;  // by upstream name
  };

  // What one upstream did between two samples: `from` may lack an upstream `to` has (it
  // counts from zero).
  static Counters Delta(const Sample& from, const Sample& to, const std::string& upstream);

  explicit TrafficHistory(size_t capacity);
  // Appends a sample, dropping the oldest beyond capacity.
  void Add(Sample sample);
  // Oldest first.
  std::vector<Sample> Samples() const;

 private:
  const size_t capacity_;
  mutable std::mutex mu_;
  std::deque<Sample> samples_;
};

}  // namespace regcache::cache
