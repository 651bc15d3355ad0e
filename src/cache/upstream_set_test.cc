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

TEST(UpstreamSetTest, AnUpstreamStandsForTheRegistryItIsNamedFor) {
  EXPECT_EQ(UpstreamRegistry("docker.io", "mirror.gcr.io"), "docker.io");
  EXPECT_EQ(UpstreamRegistry("index.docker.io", "artifactory.corp"), "docker.io");
  EXPECT_EQ(UpstreamRegistry("registry.example.com:5000", "127.0.0.1:5001"),
            "registry.example.com:5000");
  EXPECT_EQ(UpstreamRegistry("localhost", "127.0.0.1:5001"), "localhost");
  // A name that is no registry host: the URL's host, as before.
  EXPECT_EQ(UpstreamRegistry("hub", "docker.io"), "docker.io");
  EXPECT_EQ(UpstreamRegistry("internal", "127.0.0.1:5001"), "127.0.0.1:5001");

  std::vector<UpstreamConfig> configs(3);
  configs[0].name = "docker.io";
  configs[0].url = "https://mirror.gcr.io";
  configs[1].name = "ghcr.io";
  configs[1].url = "https://mirror.gcr.io";  // two upstreams on one host
  configs[2].name = "internal";
  configs[2].url = "http://127.0.0.1:5001";
  auto set = UpstreamSet::Create(configs, "docker.io", nullptr);
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  auto* hub = (*set)->Find("docker.io");
  ASSERT_NE(hub, nullptr);
  EXPECT_EQ(hub->registry(), "docker.io");
  EXPECT_TRUE(hub->IsDockerHub());
  EXPECT_EQ((*set)->Find("index.docker.io"), hub);
  EXPECT_EQ((*set)->Find("ghcr.io")->registry(), "ghcr.io");
  EXPECT_FALSE((*set)->Find("ghcr.io")->IsDockerHub());
  EXPECT_EQ((*set)->Find("internal")->registry(), "127.0.0.1:5001");
}

TEST(UpstreamSetTest, AllowAndDenyListsOfGlobs) {
  UpstreamConfig c;
  EXPECT_TRUE(RepositoryAllowed(c.allow, c.deny, "anything/at/all"));  // no lists: everything
  c.allow = {"library/*", "myorg/*"};
  EXPECT_TRUE(RepositoryAllowed(c.allow, c.deny, "library/alpine"));
  EXPECT_TRUE(RepositoryAllowed(c.allow, c.deny, "myorg/team/app"));  // '*' crosses '/'
  EXPECT_FALSE(RepositoryAllowed(c.allow, c.deny, "otherorg/app"));
  EXPECT_FALSE(RepositoryAllowed(c.allow, c.deny, "library"));
  EXPECT_FALSE(RepositoryAllowed(c.allow, c.deny, "mylibrary/alpine"));
  c.deny = {"library/evil*"};
  EXPECT_FALSE(RepositoryAllowed(c.allow, c.deny, "library/evil"));  // deny wins over allow
  EXPECT_FALSE(RepositoryAllowed(c.allow, c.deny, "library/evilcorp"));
  EXPECT_TRUE(RepositoryAllowed(c.allow, c.deny, "library/alpine"));
  c.allow.clear();  // a deny-list alone: everything else is allowed
  EXPECT_TRUE(RepositoryAllowed(c.allow, c.deny, "otherorg/app"));
  EXPECT_FALSE(RepositoryAllowed(c.allow, c.deny, "library/evil"));
  c.deny = {"*/[0-9]*"};
  EXPECT_FALSE(RepositoryAllowed(c.allow, c.deny, "org/1app"));
  EXPECT_TRUE(RepositoryAllowed(c.allow, c.deny, "org/app1"));

  auto configs = EmbeddedUpstreams();
  configs[0].allow = {"library/*"};
  auto set = UpstreamSet::Create(configs, "docker.io", nullptr);
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  EXPECT_TRUE((*set)->Find("docker.io")->Allows("library/ruby"));
  EXPECT_FALSE((*set)->Find("docker.io")->Allows("bitnami/redis"));
  EXPECT_TRUE((*set)->Find("ghcr.io")->Allows("bitnami/redis"));
  // Live reload: a kept upstream takes the new lists.
  auto* hub = (*set)->Find("docker.io");
  configs = EmbeddedUpstreams();
  configs[0].deny = {"library/ruby"};
  ASSERT_TRUE((*set)->Reconfigure(configs, "docker.io", std::chrono::seconds(1)).ok());
  EXPECT_EQ((*set)->Find("docker.io"), hub);
  EXPECT_FALSE(hub->Allows("library/ruby"));
  EXPECT_TRUE(hub->Allows("bitnami/redis"));
  configs[0].deny.clear();
  ASSERT_TRUE((*set)->Reconfigure(configs, "docker.io", std::chrono::seconds(1)).ok());
  EXPECT_TRUE(hub->Allows("library/ruby"));
  (*set)->Shutdown();
  // A reload that arrives during shutdown is refused: it would retire upstreams on a drain
  // thread that nobody joins any more (std::terminate when the set is destroyed).
  configs.pop_back();
  Status late = (*set)->Reconfigure(configs, "docker.io", std::chrono::seconds(1));
  EXPECT_EQ(late.code(), Code::kUnavailable) << late.ToString();
  EXPECT_NE((*set)->Find("public.ecr.aws"), nullptr);  // nothing changed
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
