#include "base/work_queue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>

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

}  // namespace
}  // namespace regcache
