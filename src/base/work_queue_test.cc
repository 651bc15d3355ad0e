#include "base/work_queue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <vector>

namespace regcache {
namespace {

TEST(WorkQueueTest, RefusesWorkBeyondThreadsPlusQueue) {
  WorkQueue q("test", 2, 3);
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  std::atomic<int> ran{0};
  int accepted = 0;
  for (int i = 0; i < 10; ++i) {
    if (q.TrySubmit([gate, &ran] {
          gate.wait();
          ++ran;
        }))
      ++accepted;
  }
  EXPECT_EQ(accepted, 5);  // 2 running + 3 queued
  EXPECT_EQ(q.load(), 5u);
  release.set_value();
  q.Shutdown();
  EXPECT_EQ(ran.load(), 5);
  EXPECT_FALSE(q.TrySubmit([] {}));
}

TEST(WorkQueueTest, ShutdownRunsWhatWasQueued) {
  std::atomic<int> ran{0};
  {
    WorkQueue q("test", 1, 100);
    for (int i = 0; i < 50; ++i) {
      ASSERT_TRUE(q.TrySubmit([&ran] {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
        ++ran;
      }));
    }
  }  // destructor shuts down
  EXPECT_EQ(ran.load(), 50);
}

TEST(WorkQueueTest, PriorityTasksRunBeforeNormalOnesAndEachLaneHasItsBound) {
  WorkQueue q("test", 1, 2, 1);
  std::promise<void> release, started;
  std::shared_future<void> gate = release.get_future().share();
  std::mutex mu;
  std::vector<std::string> order;
  auto record = [&](std::string name) {
    return [&, name] {
      std::lock_guard<std::mutex> lock(mu);
      order.push_back(name);
    };
  };
  ASSERT_TRUE(q.TrySubmit([gate, &started] {
    started.set_value();
    gate.wait();
  }));
  started.get_future().wait();  // the one worker is busy from here on
  EXPECT_TRUE(q.TrySubmit(record("normal 1")));
  EXPECT_TRUE(q.TrySubmit(record("normal 2")));
  EXPECT_FALSE(q.TrySubmit(record("normal 3")));  // the normal lane holds 2
  EXPECT_TRUE(q.TrySubmit(record("priority 1"), WorkQueue::Lane::kPriority));
  EXPECT_FALSE(q.TrySubmit(record("priority 2"), WorkQueue::Lane::kPriority));  // holds 1
  EXPECT_EQ(q.load(), 4u);
  release.set_value();
  q.Shutdown();
  EXPECT_EQ(order, (std::vector<std::string>{"priority 1", "normal 1", "normal 2"}));
}

TEST(WorkQueueTest, IdleWorkersTakePriorityTasksFirst) {
  // Two idle workers and no queue for normal work: one priority task takes one of them, so only
  // one normal task fits.
  WorkQueue q("test", 2, 0, 0);
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  auto wait = [gate] { gate.wait(); };
  EXPECT_TRUE(q.TrySubmit(wait, WorkQueue::Lane::kPriority));
  EXPECT_TRUE(q.TrySubmit(wait));
  EXPECT_FALSE(q.TrySubmit(wait));
  release.set_value();
}

}  // namespace
}  // namespace regcache
