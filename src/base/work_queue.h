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
  // Two lanes share the threads: a worker takes every queued kPriority task before any kNormal
  // one, so priority work never waits behind normal work, only behind the tasks running. Each
  // lane has its own bound; normal work can be starved by a steady stream of priority work, so
  // the priority lane is for work that is rare by construction (see http/auth.h).
  enum class Lane { kNormal, kPriority };

  // Starts `threads` workers (at least 1); at most `max_queued` normal tasks and
  // `max_priority_queued` priority tasks wait beyond those running.
  WorkQueue(std::string name, size_t threads, size_t max_queued, size_t max_priority_queued = 0);
  ~WorkQueue();  // Shutdown()
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  // Queues `task` in `lane`. Returns false, without running it, when that lane is full or the
  // queue is shut down.
  bool TrySubmit(std::function<void()> task, Lane lane = Lane::kNormal);

  // Tasks queued (in both lanes) or running now.
  size_t load() const;

  // Stops accepting work, runs every task already queued, and joins the threads. Idempotent.
  void Shutdown();

 private:
  void Loop();

  const std::string name_;
  const size_t threads_;
  const size_t max_queued_;
  const size_t max_priority_queued_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  std::deque<std::function<void()>> priority_tasks_;
  size_t running_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace regcache
