// Coordination for upstream calls that many requests care about.
//
// Flight: a call running in the background that requests may wait on (with their own deadline)
// or not at all. SingleFlight: one blocking call per key at a time; callers that arrive while it
// runs get its result instead of making their own, so N requests for the same cold manifest cost
// one upstream request, and N requests against a failing upstream cost one failure, not N.
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/status.h"

namespace regcache::cache {

class Flight {
 public:
  void Complete(Status status) {
    std::vector<std::function<void()>> wake;
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
      status_ = std::move(status);
      wake.swap(waiters_);
    }
    for (auto& w : wake) w();
  }
  // Calls `wake` once when the flight completes (at once if it already has).
  void OnDone(std::function<void()> wake) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!done_) {
        waiters_.push_back(std::move(wake));
        return;
      }
    }
    wake();
  }
  bool done() {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }
  Status status() {
    std::lock_guard<std::mutex> lock(mu_);
    return status_;
  }

 private:
  std::mutex mu_;
  bool done_ = false;
  Status status_;
  std::vector<std::function<void()>> waiters_;
};

template <typename T>
class SingleFlight {
 public:
  // Runs `fn` unless a call with the same key is running; then waits for it and returns its
  // result. `*joined` says which happened.
  T Do(const std::string& key, const std::function<T()>& fn, bool* joined) {
    std::shared_ptr<Call> call;
    bool leader = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto& slot = calls_[key];
      if (!slot) {
        slot = std::make_shared<Call>();
        leader = true;
      }
      call = slot;
    }
    *joined = !leader;
    if (!leader) {
      std::unique_lock<std::mutex> lock(call->mu);
      call->cv.wait(lock, [&] { return call->value.has_value(); });
      return *call->value;
    }
    T value = fn();
    {
      std::lock_guard<std::mutex> lock(mu_);
      calls_.erase(key);
    }
    {
      std::lock_guard<std::mutex> lock(call->mu);
      call->value.emplace(value);
    }
    call->cv.notify_all();
    return value;
  }

 private:
  struct Call {
    std::mutex mu;
    std::condition_variable cv;
    std::optional<T> value;
  };
  std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<Call>> calls_;
};

}  // namespace regcache::cache
