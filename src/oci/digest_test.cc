#include "oci/digest.h"

#include <gtest/gtest.h>

namespace regcache::oci {
namespace {

TEST(DigestTest, KnownVectors) {
  EXPECT_EQ(Digest::Of("").str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(
      Digest::Of("abc", DigestAlgorithm::kSha512).str(),
      "sha512:ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a8"
      "36ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f");
}

TEST(DigestTest, StreamingEqualsOneShot) {
  std::string data(1 << 20, 'x');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 131);
  DigestHasher h(DigestAlgorithm::kSha256);
  for (size_t off = 0; off < data.size(); off += 4097) {
    h.Update(data.data() + off, std::min<size_t>(4097, data.size() - off));
  }
  EXPECT_EQ(h.Finish(), Digest::Of(data));
}

TEST(DigestTest, ParseValidatesForm) {
  EXPECT_TRUE(Digest::Parse("sha256:" + std::string(64, '0')).ok());
  EXPECT_TRUE(Digest::Parse("sha512:" + std::string(128, 'f')).ok());
  EXPECT_FALSE(Digest::Parse("sha256").ok());
  EXPECT_FALSE(Digest::Parse("sha256:").ok());
  EXPECT_FALSE(Digest::Parse("sha256:" + std::string(63, '0')).ok());
  EXPECT_FALSE(Digest::Parse("sha256:" + std::string(65, '0')).ok());
  EXPECT_FALSE(Digest::Parse("sha256:" + std::string(64, 'g')).ok());
  EXPECT_FALSE(Digest::Parse("sha512:" + std::string(64, '0')).ok());
  EXPECT_FALSE(Digest::Parse("SHA256:" + std::string(64, '0')).ok());
  EXPECT_FALSE(Digest::Parse("sha256:../../" + std::string(58, '0')).ok());
  auto bad = Digest::Parse("md5:abc");
  EXPECT_EQ(bad.status().code(), Code::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("md5"), std::string::npos);
}

}  // namespace
}  // namespace regcache::oci
