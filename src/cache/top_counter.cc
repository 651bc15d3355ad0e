#include "cache/top_counter.h"

#include <algorithm>

namespace regcache::cache {

TopCounter::TopCounter(size_t capacity) : capacity_(std::max<size_t>(1, capacity)) {
  entries_.reserve(capacity_);
  index_.reserve(capacity_);
}

void TopCounter::Add(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = index_.find(key); it != index_.end()) {
    ++entries_[it->second].count;
    return;
  }
  if (entries_.size() < capacity_) {
    index_.emplace(key, entries_.size());
    entries_.push_back(Entry{key, 1, 0});
    return;
  }
  auto least = std::min_element(entries_.begin(), entries_.end(),
                                [](const Entry& a, const Entry& b) { return a.count < b.count; });
  const size_t at = static_cast<size_t>(least - entries_.begin());
  index_.erase(least->key);
  index_.emplace(key, at);
  least->error = least->count;
  least->key = key;
  ++least->count;
}

std::vector<TopCounter::Entry> TopCounter::Top(size_t n) const {
  std::vector<Entry> out;
  {
    std::lock_guard<std::mutex> lock(mu_);
    out = entries_;
  }
  auto higher = [](const Entry& a, const Entry& b) {
    return a.count != b.count ? a.count > b.count : a.key < b.key;
  };
  if (out.size() > n) {
    std::partial_sort(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(n), out.end(), higher);
    out.resize(n);
  } else {
    std::sort(out.begin(), out.end(), higher);
  }
  return out;
}

}  // namespace regcache::cache
