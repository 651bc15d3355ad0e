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

// Each input must fail with kInvalidArgument and a message containing `mentions`.
struct BadInput {
  std::string text;
  const char* mentions;
};

template <typename Parse>
void ExpectAllInvalid(const std::vector<BadInput>& cases, Parse parse) {
  for (const auto& c : cases) {
    auto r = parse(c.text);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << c.text;
    EXPECT_NE(r.status().message().find(c.mentions), std::string::npos)
        << c.text << " -> " << r.status().message();
  }
}

TEST(SyncConfigTest, RejectsBadInputNamingTheField) {
  const std::vector<BadInput> cases = {
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
  ExpectAllInvalid(cases, ParseSyncConfig);
}

std::string WithTagRegex(const std::string& re) {
  return "images: [{source: ruby, destination: x.io/r, tag_regex: '" + re + "'}]";
}

// tag_regex is RE2's syntax, Go's regexp's: what regsync and skopeo sync files use.
TEST(SyncConfigTest, TagRegexIsRe2Syntax) {
  for (const char* re :
       {"^v1\\.[0-9]+$", "v[0-9]{1,3}\\.[0-9]+", "(alpine|debian){1,}-[a-z]{2,10}", "[{]x", "x{2,}",
        "3\\.1[89](-slim)?", "\\d+\\.\\d+", "(?i)^V1", "[[:digit:]]+", "v.*?-rc", "(?:a|b)+"}) {
    auto r = ParseSyncConfig(WithTagRegex(re));
    EXPECT_TRUE(r.ok()) << re << ": " << r.status().ToString();
  }
  // What RE2 has not: back-references, lookaround. An error at load naming the field and why.
  for (const char* re : {"(a)\\1", "^(?=v)", "(?!rc)", "(?<=v)1"}) {
    auto r = ParseSyncConfig(WithTagRegex(re));
    ASSERT_FALSE(r.ok()) << re;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << re;
    EXPECT_EQ(r.status().message().find("images[0].tag_regex: "), 0u) << r.status().message();
    EXPECT_NE(r.status().message().find("no back-references or lookaround"), std::string::npos)
        << r.status().message();
  }
  auto r = ParseSyncConfig(WithTagRegex("(a)\\1"));
  EXPECT_NE(r.status().message().find("invalid escape sequence: \\1"), std::string::npos)
      << r.status().message();
}

std::string Repeated(const std::string& s, int times) {
  std::string out;
  for (int i = 0; i < times; ++i) out += s;
  return out;
}

// Inputs that broke the std::regex path (found by fuzz_serve_config): a deeply nested pattern
// overflowed the stack of libstdc++'s recursive compiler; brace counts and back-reference numbers
// were read into a long unchecked (UBSan signed overflow) and each repeat was expanded into
// copies of the automaton. RE2 parses without recursion, refuses counts above 1000 and programs
// past max_mem with an error naming the field, and reads an overlong count as literal text.
TEST(SyncConfigTest, InputsThatBrokeStdRegexAreCleanErrors) {
  struct Case {
    std::string re;
    const char* error;  // nullptr: accepted
  };
  const std::vector<Case> cases = {
      {std::string(100000, '(') + std::string(100000, ')'), nullptr},  // parsed without recursion
      {Repeated("(?:[a-z0-9]{1,1000})", 32), "pattern too large"},     // past max_mem
      {Repeated("(?:[a-z0-9]{1,1000})", 16), nullptr},                 // within it
      {std::string(100000, '('), "missing )"},
      {"(a{1000}){1000}", "invalid repetition size"},
      {"((v{100}){100}){100}", "invalid repetition size"},
      {"[x]{2000}", "invalid repetition size"},
      {"a{1001}", "invalid repetition size"},
      {"(a)\\99999999999999999999h", "invalid escape sequence"},
      {"a{999999999999999999}", nullptr},
      {"a{1,99999999999999999999}", nullptr},
  };
  for (const auto& c : cases) {
    auto r = ParseSyncConfig(WithTagRegex(c.re));
    const std::string shown = c.re.substr(0, 40);
    if (!c.error) {
      EXPECT_TRUE(r.ok()) << shown << ": " << r.status().ToString();
      continue;
    }
    ASSERT_FALSE(r.ok()) << shown;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << shown;
    EXPECT_EQ(r.status().message().find("images[0].tag_regex: "), 0u) << r.status().message();
    EXPECT_NE(r.status().message().find(c.error), std::string::npos) << r.status().message();
    EXPECT_LT(r.status().message().size(), 400u) << "one short line, not the pattern quoted";
  }
  // An overlong count read as text matches itself, not a repeat.
  auto literal = MatchingTags("a{1,99999999999999999999}", {"a", "aa"}, "x", [](auto&) {});
  ASSERT_TRUE(literal.ok());
  EXPECT_TRUE(literal->empty());
}

std::vector<std::string> Matching(const std::string& re, std::vector<std::string> listed,
                                  std::vector<std::string>* log = nullptr) {
  auto r = MatchingTags(re, std::move(listed), "ghcr.io/org/app", [&](const std::string& line) {
    if (log) log->push_back(line);
  });
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : std::vector<std::string>{};
}

TEST(MatchingTagsTest, FullMatchInListOrder) {
  const std::vector<std::string> listed = {"v1.2", "v1.10", "v1.2-rc1", "xv1.3", "latest", "v1.3"};
  EXPECT_EQ(Matching("v1\\.[0-9]+", listed), (std::vector<std::string>{"v1.2", "v1.10", "v1.3"}));
  EXPECT_EQ(Matching("^v1\\.[0-9]+$", listed), Matching("v1\\.[0-9]+", listed));
  EXPECT_EQ(Matching("v1", listed), std::vector<std::string>{});  // not a search
  // A registry listing a tag twice (or a Link loop's pages read twice): one image.
  EXPECT_EQ(Matching("v.*", {"v1", "v2", "v1", "v2"}), (std::vector<std::string>{"v1", "v2"}));
}

// A source's tag list held a 50,000-character "tag": std::regex_match recursed once per
// character and overflowed the stack (SIGSEGV, the whole sync dead); shorter ones were copied
// as if they were tags. Now every entry that is not a tag is dropped before matching, and one
// log line says so, however many there are.
TEST(MatchingTagsTest, DropsEntriesThatAreNotTagsWithOneLogLine) {
  std::vector<std::string> listed = {"v1", std::string(50000, 'v'), "v2"};
  for (int i = 0; i < 1000; ++i) listed.push_back("v/" + std::to_string(i));
  listed.push_back(std::string(129, 'v'));
  listed.push_back(".v3");
  listed.push_back("v\x1b[31m");
  listed.push_back(std::string(128, 'v'));  // the longest valid tag
  std::vector<std::string> log;
  EXPECT_EQ(Matching("^v.*$", listed, &log),
            (std::vector<std::string>{"v1", "v2", std::string(128, 'v')}));
  ASSERT_EQ(log.size(), 1u);
  EXPECT_NE(log[0].find("ignoring 1004 of 1007 entries in the tag list of ghcr.io/org/app"),
            std::string::npos)
      << log[0];
  EXPECT_NE(log[0].find("e.g. '" + std::string(40, 'v') + "…' (50000 characters)"),
            std::string::npos)
      << log[0];
  EXPECT_LT(log[0].size(), 300u);

  // Unprintable bytes of a source-chosen entry do not reach the log as they are.
  log.clear();
  Matching("v.*", {"v\x1b[31m\n"}, &log);
  ASSERT_EQ(log.size(), 1u);
  EXPECT_NE(log[0].find("e.g. 'v?[31m?'"), std::string::npos) << log[0];

  log.clear();
  Matching("v.*", {"v1", "v2"}, &log);
  EXPECT_TRUE(log.empty()) << "nothing dropped, nothing said";
}

// `(a|a)*b` against a source-chosen tag hung sync (std::regex backtracks: 2^n paths for n a's).
// RE2 is linear: the longest valid tag that almost matches takes microseconds.
TEST(MatchingTagsTest, BacktrackingPatternsTakeLinearTime) {
  const std::vector<std::string> listed = {std::string(33, 'a') + "c", std::string(127, 'a') + "c",
                                           std::string(127, 'a') + "b"};
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(Matching("(a|a)*b", listed), std::vector<std::string>{listed[2]});
  EXPECT_EQ(Matching("(a*)*b", listed), std::vector<std::string>{listed[2]});
  EXPECT_EQ(Matching("(a|aa)+$c", listed), std::vector<std::string>{});
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST(MirrorPrefixTest, ParsesHostAndPath) {
  struct Case {
    const char* text;
    const char* registry;
    const char* path;
  } cases[] = {
      {"123456789012.dkr.ecr.eu-west-1.amazonaws.com/cache",
       "123456789012.dkr.ecr.eu-west-1.amazonaws.com", "cache"},
      {"127.0.0.1:5001/cache/team-a/", "127.0.0.1:5001", "cache/team-a"},
      {"localhost:5000", "localhost:5000", ""},  // the registry's root
      {"Registry-1.Docker.io/myorg", "docker.io", "myorg"},
  };
  for (const auto& c : cases) {
    auto p = ParseMirrorPrefix(c.text);
    ASSERT_TRUE(p.ok()) << c.text << ": " << p.status().ToString();
    EXPECT_EQ(p->registry, c.registry) << c.text;
    EXPECT_EQ(p->path, c.path) << c.text;
  }
}

TEST(MirrorPrefixTest, RejectsWhatIsNotHostAndPath) {
  const std::vector<BadInput> cases = {
      {"", "registry host"},
      {"cache", "registry host"},  // would be a Docker Hub repository
      {"myorg/cache", "registry host"},
      {"/cache", "registry host"},
      {"http://127.0.0.1:5001/cache", "URL scheme"},
      {"127.0.0.1:99999/cache", "invalid registry host"},
      {"127.0.0.1:5001/cache:v1", "no tag or digest"},
      {"x.io/c@sha256:ab", "no tag or digest"},
      {"x.io/Cache", "invalid path"},
      {"x.io//cache", "invalid path"},
      {"x.io/ca che", "invalid path"},
  };
  ExpectAllInvalid(cases, ParseMirrorPrefix);
}

TEST(MirrorPrefixTest, DestinationIsTheBackingLayoutWithTheSourceTagOrDigest) {
  auto prefix = ParseMirrorPrefix("127.0.0.1:5001/cache").value();
  auto ruby = MirrorDestination(prefix, oci::ParseReference("ruby:3.3").value());
  ASSERT_TRUE(ruby.ok()) << ruby.status().ToString();
  EXPECT_EQ(ruby->String(), "127.0.0.1:5001/cache/docker.io/library/ruby:3.3");

  auto local = MirrorDestination(prefix, oci::ParseReference("localhost:5000/lib/app:v1").value());
  ASSERT_TRUE(local.ok()) << local.status().ToString();
  EXPECT_EQ(local->registry, "127.0.0.1:5001");
  EXPECT_EQ(local->repository, "cache/localhost-5000/lib/app");
  EXPECT_EQ(local->tag, "v1");

  std::string digest = "sha256:";
  digest.append(64, 'a');
  auto pinned = MirrorDestination(prefix, oci::ParseReference("ghcr.io/org/app@" + digest).value());
  ASSERT_TRUE(pinned.ok()) << pinned.status().ToString();
  EXPECT_EQ(pinned->String(), "127.0.0.1:5001/cache/ghcr.io/org/app@" + digest);
  // A tag and a digest: the tag names the copy (as for a DST without a tag).
  auto both = MirrorDestination(prefix, oci::ParseReference("ruby:3.3@" + digest).value());
  ASSERT_TRUE(both.ok()) << both.status().ToString();
  EXPECT_EQ(both->String(), "127.0.0.1:5001/cache/docker.io/library/ruby:3.3");

  auto root = MirrorDestination(ParseMirrorPrefix("x.io").value(),
                                oci::ParseReference("quay.io/a/b:1").value());
  ASSERT_TRUE(root.ok()) << root.status().ToString();
  EXPECT_EQ(root->String(), "x.io/quay.io/a/b:1");

  // Source names near the limit overflow it once prefixed: an error, not a bad request later.
  std::string long_name = "x.io/";
  long_name.append(240, 'a').append(":1");
  auto long_src = oci::ParseReference(long_name).value();
  auto too_long = MirrorDestination(prefix, long_src);
  ASSERT_FALSE(too_long.ok());
  EXPECT_EQ(too_long.status().code(), Code::kInvalidArgument);
  EXPECT_NE(too_long.status().message().find("255"), std::string::npos)
      << too_long.status().message();
}

TEST(SyncConfigTest, MirrorPrefixPerImageAndInDefaults) {
  auto c = ParseSyncConfig(R"(
defaults: {mirror_prefix: "123456789012.dkr.ecr.eu-west-1.amazonaws.com/cache"}
images:
  - source: ruby
    tags: ["3.3"]
  - source: alpine
    destination_prefix: registry.example.com/flat
  - source: ghcr.io/org/app:v1
    destination: registry.example.com/apps/app:v1
  - source: quay.io/org/tool
    mirror_prefix: 127.0.0.1:5001/other
)");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_EQ(c->images.size(), 4u);
  EXPECT_EQ(c->images[0].mirror_prefix, "123456789012.dkr.ecr.eu-west-1.amazonaws.com/cache");
  EXPECT_EQ(c->images[0].destination_prefix, "");
  // A per-image key replaces the default, whichever of the three it is.
  EXPECT_EQ(c->images[1].destination_prefix, "registry.example.com/flat");
  EXPECT_EQ(c->images[1].mirror_prefix, "");
  EXPECT_EQ(c->images[2].destination, "registry.example.com/apps/app:v1");
  EXPECT_EQ(c->images[2].mirror_prefix, "");
  EXPECT_EQ(c->images[3].mirror_prefix, "127.0.0.1:5001/other");

  // Defaults with destination_prefix, an image with mirror_prefix: the image's wins.
  c = ParseSyncConfig(R"(
defaults: {destination_prefix: registry.example.com/flat}
images: [{source: ruby, mirror_prefix: registry.example.com/cache}]
)");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->images[0].mirror_prefix, "registry.example.com/cache");
  EXPECT_EQ(c->images[0].destination_prefix, "");
}

TEST(SyncConfigTest, MirrorPrefixErrorsNameTheField) {
  const std::vector<BadInput> cases = {
      {"images: [{source: ruby, mirror_prefix: cache}]", "images[0].mirror_prefix"},
      {"images: [{source: ruby, mirror_prefix: 'http://x.io/cache'}]", "URL scheme"},
      {"images: [{source: ruby, mirror_prefix: 'x.io/cache:v1'}]", "no tag or digest"},
      {"defaults: {mirror_prefix: 'x.io/Cache'}\nimages: [{source: ruby}]",
       "defaults.mirror_prefix"},
      {"images: [{source: ruby, mirror_prefix: x.io/c, destination_prefix: x.io/d}]",
       "images[0]: give one of"},
      {"images: [{source: ruby, mirror_prefix: x.io/c, destination: x.io/r}]",
       "not both 'destination' and 'mirror_prefix'"},
      {"images: [{source: ruby, destination: x.io/r, destination_prefix: x.io/d}]",
       "not both 'destination' and 'destination_prefix'"},
      {"defaults: {mirror_prefix: x.io/c, destination_prefix: x.io/d}\nimages: [{source: "
       "ruby}]",
       "defaults: give one of"},
      {"defaults: {platforms: [linux/amd64]}\nimages: [{source: ruby}]", "mirror_prefix"},
      {"images: [{source: ruby, mirror_prefix: ''}]", "images[0].mirror_prefix"},
      {"images: [{source: ruby, destination_prefix: ''}]", "needs 'destination'"},
  };
  ExpectAllInvalid(cases, ParseSyncConfig);
}

TEST(SyncRunnerTest, ExpandsMirrorPrefixIntoTheBackingLayout) {
  auto c = ParseSyncConfig(R"(
images:
  - source: ruby
    tags: ["3.3", "3.3-slim"]
    mirror_prefix: 127.0.0.1:5001/cache
  - source: localhost:5000/lib/app:v1
    mirror_prefix: 127.0.0.1:5001/cache
  - source: ruby
    tags: ["3.3"]
    destination_prefix: 127.0.0.1:5001/flat
)");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ClientPool pool(upstream::ClientOptions{});
  SyncRunner runner(pool, *c);
  std::vector<SyncOutcome> failures;
  auto items = runner.Expand(failures, [](const std::string&) {});  // listed: no request
  EXPECT_TRUE(failures.empty());
  std::vector<std::string> destinations;
  for (const auto& item : items) destinations.push_back(item.destination.String());
  EXPECT_EQ(destinations, (std::vector<std::string>{
                              "127.0.0.1:5001/cache/docker.io/library/ruby:3.3",
                              "127.0.0.1:5001/cache/docker.io/library/ruby:3.3-slim",
                              "127.0.0.1:5001/cache/localhost-5000/lib/app:v1",
                              "127.0.0.1:5001/flat/library/ruby:3.3",  // the older flat layout
                          }));
}

TEST(SyncConfigTest, Durations) {
  EXPECT_EQ(ParseDuration("90").value(), std::chrono::seconds(90));
  EXPECT_EQ(ParseDuration("6h").value(), std::chrono::seconds(21600));
  EXPECT_FALSE(ParseDuration("h").ok());
  EXPECT_FALSE(ParseDuration("-1s").ok());
}

}  // namespace
}  // namespace regcache::copy
