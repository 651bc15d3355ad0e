#include "copy/sync.h"

#include <gtest/gtest.h>

#include "copy/yaml_config.h"

namespace regcache::copy {
namespace {

TEST(SyncConfigTest, ParsesFullExample) {
  setenv("REGCACHE_TEST_PW", "s3cret", 1);
  auto c = ParseSyncConfig(R"(
parallel: 3
blob_parallel: 2
ratelimit: {min_remaining: 10, action: wait, wait_interval: 2m, max_wait: 1h}
defaults: {destination_prefix: "123.dkr.ecr.us-east-1.amazonaws.com/mirror"}
registries:
  "https://index.docker.io/v1/": {username: hub, password_env: REGCACHE_TEST_PW}
  localhost:5000: {insecure: true}
images:
  - source: ruby
    tags: ["3.3", "3.2-slim"]
  - source: ghcr.io/org/app
    tag_regex: '^v1\.[0-9]+$'
    destination: localhost:5000/apps/app
    platforms: [linux/amd64, linux/arm64/v8]
    check_upstream: true
)");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->parallel, 3);
  EXPECT_EQ(c->blob_parallel, 2);
  EXPECT_EQ(c->ratelimit.min_remaining, 10);
  EXPECT_TRUE(c->ratelimit.wait);
  EXPECT_EQ(c->ratelimit.wait_interval, std::chrono::seconds(120));
  EXPECT_EQ(c->ratelimit.max_wait, std::chrono::seconds(3600));
  ASSERT_EQ(c->registries.count("docker.io"), 1u);
  EXPECT_EQ(c->registries["docker.io"].credentials->password, "s3cret");
  EXPECT_TRUE(c->registries["localhost:5000"].insecure);
  ASSERT_EQ(c->images.size(), 2u);
  EXPECT_EQ(c->images[0].destination_prefix, "123.dkr.ecr.us-east-1.amazonaws.com/mirror");
  EXPECT_EQ(c->images[0].tags.size(), 2u);
  EXPECT_EQ(c->images[1].platforms.size(), 2u);
  EXPECT_TRUE(c->images[1].check_upstream);
}

TEST(SyncConfigTest, RejectsBadInputNamingTheField) {
  struct Case {
    const char* yaml;
    const char* mentions;
  } cases[] = {
      {"images: []", "images"},
      {"- a\n- b", "mapping"},
      {"images: [{source: ruby}]", "destination"},
      {"images: [{source: Ruby, destination: x.io/r}]", "images[0].source"},
      {"images: [{source: ruby, destination: x.io/r, tag_regex: '('}]", "tag_regex"},
      {"images: [{source: ruby, destination: x.io/r, platforms: [linux]}]", "platforms"},
      {"images: [{source: ruby, destination: x.io/r, colour: red}]", "unknown key 'colour'"},
      {"images: [{source: 'ruby:3', tags: ['3'], destination: x.io/r}]", "do not also give tags"},
      {"images: [{source: ruby, tags: ['-x'], destination: x.io/r}]", "invalid tag"},
      {"ratelimit: {action: panic}\nimages: [{source: ruby, destination: x.io/r}]", "action"},
      {"ratelimit: {max_wait: soon}\nimages: [{source: ruby, destination: x.io/r}]", "duration"},
      {"registries: {x.io: {password_env: NOPE_NOT_SET_123, username: u}}\nimages: [{source: ruby, "
       "destination: x.io/r}]",
       "NOPE_NOT_SET_123"},
      {"images: [{source: ruby, destination: x.io/r}", "sync file"},
      {"parallel: 0\nimages: [{source: ruby, destination: x.io/r}]", "parallel"},
  };
  for (const auto& c : cases) {
    auto r = ParseSyncConfig(c.yaml);
    ASSERT_FALSE(r.ok()) << c.yaml;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << c.yaml;
    EXPECT_NE(r.status().message().find(c.mentions), std::string::npos)
        << c.yaml << " -> " << r.status().message();
  }
}

// A deeply nested tag_regex overflowed the stack inside std::regex's recursive compiler (a
// segfault instead of an error naming the field). Found with the fuzz_serve_config target.
TEST(SyncConfigTest, RefusesOverlongTagRegex) {
  std::string nested = std::string(100000, '(') + std::string(100000, ')');
  auto r =
      ParseSyncConfig("images: [{source: ruby, destination: x.io/r, tag_regex: '" + nested + "'}]");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("images[0].tag_regex"), std::string::npos)
      << r.status().message();
}

TEST(SyncConfigTest, Durations) {
  EXPECT_EQ(ParseDuration("90").value(), std::chrono::seconds(90));
  EXPECT_EQ(ParseDuration("6h").value(), std::chrono::seconds(21600));
  EXPECT_FALSE(ParseDuration("h").ok());
  EXPECT_FALSE(ParseDuration("-1s").ok());
}

}  // namespace
}  // namespace regcache::copy
