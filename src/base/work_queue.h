// A fixed set of threads running blocking tasks from a bounded queue. Used so that work for one
// upstream (or for the local stores) has its own capacity: when it is saturated, new work is
// refused at once instead of queueing without bound behind it.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace regcache {

class WorkQueue {
 public:
  // Starts `threads` workers (at least 1); at most `max_queued` tasks wait beyond those running.
  WorkQueue(std::string name, size_t threads, size_t max_queued);
  ~WorkQueue();  // Shutdown()
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  // Queues `task`. Returns false, without running it, when the queue is full or shut down.
  bool TrySubmit(std::function<void()> task);

  // Tasks queued or running now.
  size_t load() const;

  // Stops accepting work, runs every task already queued, and joins the threads. Idempotent.
  void Shutdown();

 private:
  void Loop();

  const std::string name_;
  const size_t threads_;
  const size_t max_queued_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  size_t running_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace regcache
