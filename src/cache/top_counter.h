// The most frequent keys of an unbounded stream, in bounded memory: the Space-Saving algorithm
// (Metwally, Agrawal, El Abbadi, 2005). At most `capacity` keys are tracked; a key not tracked
// takes the place of the least counted one and inherits its count as its possible error. Every
// key seen more often than total/capacity times is tracked, and each count is an upper bound,
// over by at most the entry's `error`.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace regcache::cache {

class TopCounter {
 public:
  explicit TopCounter(size_t capacity);

  // One occurrence of `key`: a hash lookup under a mutex; a key not tracked while the table is
  // full also scans the table for the least counted entry.
  void Add(const std::string& key);

  struct Entry {
    std::string key;
    uint64_t count = 0;  // upper bound of the true count
    uint64_t error = 0;  // count - error is a lower bound
  };
  // The `n` highest counts, highest first (ties by key).
  std::vector<Entry> Top(size_t n) const;

 private:
  const size_t capacity_;
  mutable std::mutex mu_;
  std::vector<Entry> entries_;
  std::unordered_map<std::string, size_t> index_;  // key -> position in entries_
};

}  // namespace regcache::cache
