// Which of many repeated events are worth a log line: the first for each key (a client address,
// say), then one per interval, with how many were left out in between. Bounded in memory, so a
// flood of distinct keys cannot grow it.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace regcache {

class OncePerInterval {
 public:
  using Clock = std::chrono::steady_clock;
  // Remembers at most `max_keys` keys.
  OncePerInterval(Clock::duration interval, size_t max_keys);

  // Whether an event for `key` at `now` gets its log line: none was logged for `key` within the
  // interval. When true, *suppressed (if given) is how many events for `key` were not logged
  // since its last line. With `max_keys` keys logged within the interval, events for any other
  // key are not logged (only counted by the caller's metrics) until one of them ages out:
  // a flood from many sources is summed up by the keys already logged, never by one line each.
  bool ShouldLog(std::string_view key, Clock::time_point now, uint64_t* suppressed = nullptr);

  size_t tracked();

 private:
  struct Entry {
    Clock::time_point logged;
    uint64_t suppressed = 0;
  };
  const Clock::duration interval_;
  const size_t max_keys_;
  std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;
};

}  // namespace regcache
