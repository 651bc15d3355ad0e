#include "app/serve_config.h"

#include <gtest/gtest.h>

namespace regcache::app {
namespace {

TEST(ServeConfigTest, DefaultsAreTheEmbeddedSet) {
  ServeConfig c;
  EXPECT_EQ(c.server.port, 5000);
  EXPECT_EQ(c.data_dir, "./regcache-data");
  EXPECT_EQ(c.default_upstream, "docker.io");
  ASSERT_EQ(c.upstreams.size(), 6u);
  EXPECT_EQ(c.upstreams[0].url, "https://registry-1.docker.io");
}

TEST(ServeConfigTest, LoadsYamlAndFlags) {
  ServeConfig c;
  auto s = LoadServeConfig(R"(
listen: 127.0.0.1:0
data_dir: /tmp/x
shutdown_grace: 5s
upstreams:
  - name: hub
    url: http://127.0.0.1:5001
    tag_ttl: 10m
    ttl_rules: [{pattern: "library/*", ttl: 1h}]
  - name: ghcr.io
    url: https://ghcr.io
    username: u
    password: p
)",
                           &c);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(c.server.host, "127.0.0.1");
  EXPECT_EQ(c.server.port, 0);
  EXPECT_EQ(c.server.shutdown_grace, std::chrono::seconds(5));
  ASSERT_EQ(c.upstreams.size(), 2u);
  EXPECT_EQ(c.default_upstream, "hub");
  EXPECT_EQ(c.upstreams[0].tag_ttl, std::chrono::seconds(600));
  EXPECT_EQ(c.upstreams[0].ttl_rules[0].ttl, std::chrono::seconds(3600));
  EXPECT_EQ(c.upstreams[1].credentials->username, "u");

  http::ServerOptions o;
  ASSERT_TRUE(ParseListen(":5000", &o).ok());
  EXPECT_EQ(o.host, "0.0.0.0");
  ASSERT_TRUE(ParseListen("[::1]:80", &o).ok());
  EXPECT_EQ(o.host, "::1");
  EXPECT_FALSE(ParseListen("5000", &o).ok());
  EXPECT_FALSE(ParseListen(":99999", &o).ok());
  EXPECT_EQ(ParseUpstreamFlag("hub=http://x:1")->name, "hub");
  EXPECT_FALSE(ParseUpstreamFlag("=http://x").ok());
}

TEST(ServeConfigTest, RejectsUnknownKeysAndBadValues) {
  ServeConfig c;
  EXPECT_FALSE(LoadServeConfig("listn: :5000", &c).ok());
  EXPECT_FALSE(LoadServeConfig("upstreams: [{name: x}]", &c).ok());
  EXPECT_FALSE(LoadServeConfig("upstreams: [{name: x, url: y, tag_ttl: soon}]", &c).ok());
  EXPECT_FALSE(LoadServeConfig("io_threads: 0", &c).ok());
  EXPECT_FALSE(LoadServeConfig("[", &c).ok());
}

}  // namespace
}  // namespace regcache::app
