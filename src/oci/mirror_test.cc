#include "oci/mirror.h"

#include <gtest/gtest.h>

#include "oci/reference.h"

namespace regcache::oci {
namespace {

TEST(MirrorRepositoryTest, PrefixRegistryRepository) {
  EXPECT_EQ(MirrorRepository("cache", "docker.io", "library/ruby"), "cache/docker.io/library/ruby");
  EXPECT_EQ(MirrorRepository("/a/b/", "ghcr.io", "org/app"), "a/b/ghcr.io/org/app");
  EXPECT_EQ(MirrorRepository("", "quay.io", "x/y"), "quay.io/x/y");
}

TEST(MirrorRepositoryTest, HubAliasesAndPortsBecomeValidComponents) {
  EXPECT_EQ(MirrorRepository("c", "registry-1.docker.io", "library/ruby"),
            "c/docker.io/library/ruby");
  EXPECT_EQ(MirrorRepository("c", "https://index.docker.io/v1/", "library/ruby"),
            "c/docker.io/library/ruby");
  std::string local = MirrorRepository("c", "127.0.0.1:5000", "app");
  EXPECT_EQ(local, "c/127.0.0.1-5000/app");
  EXPECT_TRUE(IsValidRepository(local));
  EXPECT_TRUE(IsValidRepository(MirrorRepository("c", "Localhost:5000", "a/b")));
}

}  // namespace
}  // namespace regcache::oci
