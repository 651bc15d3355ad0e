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
  Fill fill(oci::Digest::Of("x"), 10, rfd);
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
  fill.WaitForChange(9, [&] { woke = true; });
  EXPECT_FALSE(woke);
  fill.Complete(Status::Ok());
  EXPECT_TRUE(woke);
  EXPECT_EQ(fill.Snapshot().readable, 10u);
  // A waiter registering with a stale view is woken at once.
  bool immediate = false;
  fill.WaitForChange(9, [&] { immediate = true; });
  EXPECT_TRUE(immediate);
  close(wfd);
  unlink(path);
}

TEST(FillTest, FailedFillReportsItsError) {
  char path[] = "/tmp/regcache-fill-XXXXXX";
  int wfd = mkstemp(path);
  Fill fill(oci::Digest::Of("x"), 100, open(path, O_RDONLY));
  fill.Progress(50);
  fill.Complete(Integrity("digest mismatch"));
  auto s = fill.Snapshot();
  EXPECT_TRUE(s.done);
  EXPECT_EQ(s.status.code(), Code::kIntegrity);
  EXPECT_EQ(s.readable, 0u);
  close(wfd);
  unlink(path);
}

}  // namespace
}  // namespace regcache::cache
