#include "copy/blob_pipe.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace regcache::copy {
namespace {

std::string Pattern(size_t n) {
  std::string s(n, 0);
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(i * 7 + (i >> 9));
  return s;
}

TEST(BlobPipeTest, StreamsLargeBlobThroughSmallBuffer) {
  const std::string data = Pattern(3 << 20);
  BlobPipe pipe(4096, data.size());
  std::thread producer([&] {
    for (size_t off = 0; off < data.size(); off += 1000) {
      ASSERT_TRUE(pipe.Write(data.data() + off, std::min<size_t>(1000, data.size() - off)).ok());
    }
    pipe.Finish(Status::Ok());
  });
  std::string got;
  char buf[777];
  while (true) {
    auto n = pipe.Read(buf, sizeof(buf));
    ASSERT_TRUE(n.ok());
    if (*n == 0) break;
    got.append(buf, *n);
  }
  producer.join();
  EXPECT_EQ(got, data);
}

TEST(BlobPipeTest, WithholdsLastByteUntilVerified) {
  BlobPipe pipe(1024, 10);
  ASSERT_TRUE(pipe.Write("0123456789", 10).ok());
  char buf[16];
  auto n = pipe.Read(buf, sizeof(buf));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 9u);  // the tenth byte waits for the digest check
  std::thread verifier([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    pipe.Finish(Integrity("digest mismatch"));
  });
  auto last = pipe.Read(buf, sizeof(buf));
  verifier.join();
  ASSERT_FALSE(last.ok());
  EXPECT_EQ(last.status().code(), Code::kIntegrity);
}

TEST(BlobPipeTest, CancelUnblocksProducer) {
  BlobPipe pipe(8, 100);
  std::thread consumer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    pipe.Cancel(Unavailable("PUT failed"));
  });
  std::string big(100, 'x');
  Status s = pipe.Write(big.data(), big.size());
  consumer.join();
  EXPECT_EQ(s.code(), Code::kAborted);
}

TEST(BlobPipeTest, EmptyBlobEndsOnlyAfterVerification) {
  BlobPipe pipe(8, 0);
  pipe.Finish(Status::Ok());
  char buf[4];
  auto n = pipe.Read(buf, sizeof(buf));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
}

}  // namespace
}  // namespace regcache::copy
