#include "base/once_per_interval.h"

#include <iterator>

namespace regcache {

OncePerInterval::OncePerInterval(Clock::duration interval, size_t max_keys)
    : interval_(interval), max_keys_(max_keys == 0 ? 1 : max_keys) {}

bool OncePerInterval::ShouldLog(std::string_view key, Clock::time_point now, uint64_t* suppressed) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(std::string(key));
  if (it != entries_.end()) {
    if (now - it->second.logged < interval_) {
      ++it->second.suppressed;
      return false;
    }
    if (suppressed) *suppressed = it->second.suppressed;
    it->second = Entry{now, 0};
    return true;
  }
  if (entries_.size() >= max_keys_) {
    // Keys whose interval is over would log at once anyway: forgetting them loses nothing but
    // the count of what they left out since.
    std::erase_if(entries_, [&](const auto& kv) { return now - kv.second.logged >= interval_; });
    if (entries_.size() >= max_keys_) return false;
  }
  entries_.emplace(std::string(key), Entry{now, 0});
  if (suppressed) *suppressed = 0;
  return true;
}

size_t OncePerInterval::tracked() {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

}  // namespace regcache
