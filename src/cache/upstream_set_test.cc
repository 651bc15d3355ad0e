#include "cache/upstream_set.h"

#include <gtest/gtest.h>

namespace regcache::cache {
namespace {

TEST(UpstreamSetTest, FindsByNameOrHostAndAppliesTtlRules) {
  auto configs = EmbeddedUpstreams();
  configs[0].tag_ttl = std::chrono::seconds(300);
  configs[0].ttl_rules = {{"library/*", std::chrono::seconds(3600)},
                          {"*/nightly*", std::chrono::seconds(30)}};
  auto set = UpstreamSet::Create(configs, "docker.io", nullptr);
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  auto* hub = (*set)->Find("docker.io");
  ASSERT_NE(hub, nullptr);
  EXPECT_EQ((*set)->Find("registry-1.docker.io"), hub);
  EXPECT_EQ((*set)->Find("index.docker.io"), hub);
  EXPECT_EQ((*set)->Default(), hub);
  EXPECT_TRUE(hub->IsDockerHub());
  EXPECT_EQ((*set)->Find("evil.example.com"), nullptr);
  EXPECT_FALSE((*set)->Find("ghcr.io")->IsDockerHub());
  EXPECT_EQ(hub->TtlFor("library/ruby"), std::chrono::seconds(3600));
  EXPECT_EQ(hub->TtlFor("org/nightly-build"), std::chrono::seconds(30));
  EXPECT_EQ(hub->TtlFor("org/app"), std::chrono::seconds(300));
}

TEST(UpstreamSetTest, RejectsBadConfigs) {
  UpstreamConfig bad;
  bad.name = "x";
  bad.url = "ftp://x";
  EXPECT_FALSE(UpstreamSet::Create({bad}, "", nullptr).ok());
  bad.url = "https://bad host";
  EXPECT_FALSE(UpstreamSet::Create({bad}, "", nullptr).ok());
  UpstreamConfig a{"a", "https://a.io"};
  EXPECT_FALSE(UpstreamSet::Create({a, a}, "", nullptr).ok());
  EXPECT_FALSE(UpstreamSet::Create({a}, "missing", nullptr).ok());
  EXPECT_FALSE(UpstreamSet::Create({}, "", nullptr).ok());
}

}  // namespace
}  // namespace regcache::cache
