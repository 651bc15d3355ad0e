#include "base/work_queue.h"

namespace regcache {

WorkQueue::WorkQueue(std::string name, size_t threads, size_t max_queued,
                     size_t max_priority_queued)
    : name_(std::move(name)),
      threads_(threads == 0 ? 1 : threads),
      max_queued_(max_queued),
      max_priority_queued_(max_priority_queued) {
  workers_.reserve(threads_);
  for (size_t i = 0; i < threads_; ++i) workers_.emplace_back([this] { Loop(); });
}

WorkQueue::~WorkQueue() { Shutdown(); }

bool WorkQueue::TrySubmit(std::function<void()> task, Lane lane) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return false;
    // Idle workers take a task at once; beyond them, only the lane's bound may wait. Priority
    // tasks are taken first, so they use up the idle workers before normal ones can.
    const size_t idle = threads_ > running_ ? threads_ - running_ : 0;
    if (lane == Lane::kPriority) {
      if (priority_tasks_.size() >= idle + max_priority_queued_) return false;
      priority_tasks_.push_back(std::move(task));
    } else {
      const size_t idle_left = idle > priority_tasks_.size() ? idle - priority_tasks_.size() : 0;
      if (tasks_.size() >= idle_left + max_queued_) return false;
      tasks_.push_back(std::move(task));
    }
  }
  cv_.notify_one();
  return true;
}

size_t WorkQueue::load() const {
  std::lock_guard<std::mutex> lock(mu_);
  return tasks_.size() + priority_tasks_.size() + running_;
}

void WorkQueue::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && workers_.empty()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  std::vector<std::thread> workers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    workers.swap(workers_);
  }
  for (auto& t : workers) {
    if (t.joinable()) t.join();
  }
}

void WorkQueue::Loop() {
  while (true) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !tasks_.empty() || !priority_tasks_.empty(); });
      auto& lane = priority_tasks_.empty() ? tasks_ : priority_tasks_;
      if (lane.empty()) return;  // stopping, and nothing left to run
      task = std::move(lane.front());
      lane.pop_front();
      ++running_;
    }
    task();
    std::lock_guard<std::mutex> lock(mu_);
    --running_;
  }
}

}  // namespace regcache
