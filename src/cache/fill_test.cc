#include "cache/fill.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <thread>

namespace regcache::cache {
namespace {

TEST(FillTest, ReadersFollowTheWriterAndGetTheLastByteOnlyWhenVerified) {
  char path[] = "/tmp/regcache-fill-XXXXXX";
  int wfd = mkstemp(path);
  ASSERT_GE(wfd, 0);
  int rfd = open(path, O_RDONLY);
  Fill fill(oci::Digest::Of("x"), "library/app", rfd);
  EXPECT_FALSE(fill.Snapshot().started);
  std::atomic<bool> started{false};
  fill.WaitForChange(fill.Snapshot(), [&] { started = true; });
  fill.Start(10);  // upstream answered: readers may send their status line now
  EXPECT_TRUE(started);
  EXPECT_EQ(fill.Snapshot().size, 10u);
  EXPECT_EQ(fill.Snapshot().readable, 0u);
  ASSERT_EQ(write(wfd, "0123456789", 10), 10);
  fill.Progress(10);
  auto s = fill.Snapshot();
  EXPECT_EQ(s.readable, 9u);  // the last byte waits for verification
  EXPECT_FALSE(s.done);
  char buf[16];
  EXPECT_EQ(fill.ReadAt(buf, 4, 3).value(), 4u);
  EXPECT_EQ(std::string(buf, 4), "3456");

  std::atomic<bool> woke{false};
  fill.WaitForChange(s, [&] { woke = true; });
  EXPECT_FALSE(woke);
  fill.Complete(Status::Ok());
  EXPECT_TRUE(woke);
  EXPECT_EQ(fill.Snapshot().readable, 10u);
  // A waiter registering with a stale view is woken at once.
  bool immediate = false;
  fill.WaitForChange(s, [&] { immediate = true; });
  EXPECT_TRUE(immediate);
  close(wfd);
  unlink(path);
}

TEST(FillTest, FailedFillReportsItsError) {
  char path[] = "/tmp/regcache-fill-XXXXXX";
  int wfd = mkstemp(path);
  Fill fill(oci::Digest::Of("x"), "library/app", open(path, O_RDONLY));
  fill.Start(100);
  fill.Progress(50);
  fill.Complete(Integrity("digest mismatch"));
  auto s = fill.Snapshot();
  EXPECT_TRUE(s.done);
  EXPECT_EQ(s.status.code(), Code::kIntegrity);
  EXPECT_EQ(s.readable, 0u);
  close(wfd);
  unlink(path);
}

TEST(FillTest, FailureBeforeUpstreamAnsweredIsNotAStart) {
  char path[] = "/tmp/regcache-fill-XXXXXX";
  int wfd = mkstemp(path);
  Fill fill(oci::Digest::Of("x"), "library/app", open(path, O_RDONLY));
  bool woke = false;
  fill.WaitForChange(fill.Snapshot(), [&] { woke = true; });
  fill.Complete(Unavailable("upstream answered 500"));
  EXPECT_TRUE(woke);
  auto s = fill.Snapshot();
  EXPECT_FALSE(s.started);
  EXPECT_TRUE(s.done);
  EXPECT_EQ(s.status.code(), Code::kUnavailable);
  // Completing ok without a size is a bug, reported as such rather than served.
  Fill odd(oci::Digest::Of("y"), "library/app", open(path, O_RDONLY));
  odd.Complete(Status::Ok());
  EXPECT_EQ(odd.Snapshot().status.code(), Code::kInternal);
  close(wfd);
  unlink(path);
}

TEST(FillTest, MemoryModeRelaysThroughABoundedWindow) {
  Fill fill(oci::Digest::Of("x"), "library/app", -1);
  int fast = fill.AddReader(0);
  int stalled = fill.AddReader(0);
  fill.UseMemory(8);
  fill.Start(20);
  ASSERT_TRUE(fill.memory());
  char buf[32];
  ASSERT_TRUE(fill.WriteMemory("01234567", 8, std::chrono::milliseconds(10)).ok());
  EXPECT_EQ(fill.CopyOut(fast, 0, buf, sizeof(buf)).value(), 8u);
  fill.ReaderProgress(fast, 8);
  // The window is full for the stalled reader: after the stall limit it is cut off, the fast
  // reader goes on, and the window never holds more than it must.
  ASSERT_TRUE(fill.WriteMemory("89abcdef", 8, std::chrono::milliseconds(10)).ok());
  EXPECT_EQ(fill.CopyOut(stalled, 0, buf, sizeof(buf)).status().code(), Code::kUnavailable);
  EXPECT_EQ(fill.CopyOut(fast, 8, buf, sizeof(buf)).value(), 8u);
  EXPECT_EQ(std::string(buf, 8), "89abcdef");
  fill.ReaderProgress(fast, 16);
  EXPECT_EQ(fill.window_start(), 8u);  // bytes every reader took are gone
  // A newcomer cannot start from the beginning any more.
  int late = fill.AddReader(0);
  EXPECT_FALSE(fill.CopyOut(late, 0, buf, sizeof(buf)).ok());
  // The last byte waits for verification, as on disk.
  ASSERT_TRUE(fill.WriteMemory("ghij", 4, std::chrono::milliseconds(10)).ok());
  EXPECT_EQ(fill.CopyOut(fast, 16, buf, sizeof(buf)).value(), 3u);
  fill.Complete(Status::Ok());
  EXPECT_EQ(fill.CopyOut(fast, 19, buf, sizeof(buf)).value(), 1u);
  EXPECT_EQ(buf[0], 'j');
  fill.RemoveReader(fast);
}

}  // namespace
}  // namespace regcache::cache
