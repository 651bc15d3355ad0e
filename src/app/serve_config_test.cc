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

TEST(ServeConfigTest, FailureHandlingKeys) {
  ServeConfig c;
  auto s = LoadServeConfig(R"(
upstream_timeout: 1500ms
upstream_concurrency: 4
upstream_queue: 16
fill_threads: 2
fill_queue: 8
revalidate_wait: 50ms
negative_ttl: 10s
breaker_failures: 5
breaker_open: 2s
write_timeout: 7s
max_connections: 300
fill_start_timeout: 20s
)",
                           &c);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(c.policy.timeout, std::chrono::milliseconds(1500));
  EXPECT_EQ(c.policy.request_threads, 4u);
  EXPECT_EQ(c.policy.request_queue, 16u);
  EXPECT_EQ(c.policy.fill_threads, 2u);
  EXPECT_EQ(c.policy.fill_queue, 8u);
  EXPECT_EQ(c.policy.breaker.failures, 5);
  EXPECT_EQ(c.policy.breaker.open_for, std::chrono::milliseconds(2000));
  EXPECT_EQ(c.server.revalidate_wait, std::chrono::milliseconds(50));
  EXPECT_EQ(c.cache.negative_ttl, std::chrono::seconds(10));
  EXPECT_EQ(c.server.write_timeout, std::chrono::seconds(7));
  EXPECT_EQ(c.server.max_connections, 300u);
  EXPECT_EQ(c.server.fill_start_timeout, std::chrono::seconds(20));

  ServeConfig bad;
  EXPECT_FALSE(LoadServeConfig("upstream_timeout: 5ms", &bad).ok());
  EXPECT_FALSE(LoadServeConfig("upstream_concurrency: 0", &bad).ok());
  EXPECT_FALSE(LoadServeConfig("breaker_open: soon", &bad).ok());
  EXPECT_FALSE(LoadServeConfig("revalidate_wait: 99999999999999999999ms", &bad).ok());
}

TEST(ServeConfigTest, RepositoryAllowAndDenyLists) {
  ServeConfig c;
  auto s = LoadServeConfig(R"(
upstreams:
  - name: docker.io
    url: https://registry-1.docker.io
    allow: ["library/*", "myorg/*"]
    deny: ["library/evil*"]
)",
                           &c);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_EQ(c.upstreams.size(), 1u);
  EXPECT_EQ(c.upstreams[0].allow, (std::vector<std::string>{"library/*", "myorg/*"}));
  EXPECT_EQ(c.upstreams[0].deny, (std::vector<std::string>{"library/evil*"}));
  for (const char* bad : {
           "upstreams: [{name: x, url: http://h, allow: library/*}]",  // not a list
           "upstreams: [{name: x, url: http://h, deny: ['']}]",
       }) {
    ServeConfig b;
    EXPECT_FALSE(LoadServeConfig(bad, &b).ok()) << bad;
  }
}

TEST(ServeConfigTest, UpstreamNamesAreHostsOrIdentifiers) {
  for (const char* good : {"docker.io", "registry.example.com:5000", "internal", "my_mirror-2",
                           "[::1]:5000", "UPPER.case"}) {
    ServeConfig c;
    const std::string yaml =
        std::string("upstreams:\n  - {name: '") + good + "', url: 'https://r.example.com'}\n";
    Status s = LoadServeConfig(yaml, &c);
    EXPECT_TRUE(s.ok()) << good << ": " << s.ToString();
    EXPECT_TRUE(ParseUpstreamFlag(std::string(good) + "=https://r.example.com").ok()) << good;
  }
  // A quote in a name broke every /metrics scrape (it lands in label values); spaces, slashes
  // and control characters are no better in paths and logs.
  for (const char* bad :
       {"a\"b", "with space", "team/mirror", "tab\there", "back\\slash", "x{y}", "\u00e9t\u00e9"}) {
    ServeConfig c;
    std::string quoted;  // as a YAML double-quoted scalar
    for (char ch : std::string(bad)) {
      if (ch == '"' || ch == '\\') quoted.push_back('\\');
      quoted.push_back(ch);
    }
    const std::string yaml =
        "upstreams:\n  - name: \"" + quoted + "\"\n    url: https://r.example.com\n";
    Status s = LoadServeConfig(yaml, &c);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.code(), Code::kInvalidArgument);
    EXPECT_NE(s.message().find("upstreams[0].name"), std::string::npos) << s.ToString();
    EXPECT_FALSE(ParseUpstreamFlag(std::string(bad) + "=https://r.example.com").ok()) << bad;
  }
}

TEST(ServeConfigTest, AuthSection) {
  ServeConfig c;
  EXPECT_TRUE(c.auth.htpasswd.empty());  // anonymous by default
  auto s = LoadServeConfig(R"(
auth:
  htpasswd: /etc/regcache/htpasswd
  realm: team cache
  anonymous: [/healthz, /readyz]
  user_failures: 2
  failure_delay: 2s
  max_failure_delay: 10m
  failure_window: 2m
  address_failures: 20
  verified_ttl: 1m
)",
                           &c);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(c.auth.htpasswd, "/etc/regcache/htpasswd");
  EXPECT_EQ(c.auth.realm, "team cache");
  EXPECT_EQ(c.auth.anonymous, (std::vector<std::string>{"/healthz", "/readyz"}));
  EXPECT_EQ(c.auth.user_failures, 2);
  EXPECT_EQ(c.auth.failure_delay, std::chrono::seconds(2));
  EXPECT_EQ(c.auth.max_failure_delay, std::chrono::seconds(600));
  EXPECT_EQ(c.auth.failure_window, std::chrono::seconds(120));
  EXPECT_EQ(c.auth.address_failures, 20);
  EXPECT_EQ(c.auth.verified_ttl, std::chrono::seconds(60));

  ServeConfig none;
  ASSERT_TRUE(LoadServeConfig("auth: {htpasswd: /h, anonymous: }", &none).ok());
  EXPECT_TRUE(none.auth.anonymous.empty());

  for (const char* bad : {
           "auth: {realm: x}",                            // no htpasswd
           "auth: {htpasswd: /h, users: [a]}",            // unknown key
           "auth: {htpasswd: /h, anonymous: [/v2/]}",     // registry paths need credentials
           "auth: {htpasswd: /h, anonymous: [metrics]}",  // not a path
           "auth: {htpasswd: /h, realm: 'a\"b'}",        // would break the header
           "auth: {htpasswd: /h, user_failures: -1}",
           "auth: {htpasswd: /h, address_failures: 0}",
           "auth: {htpasswd: /h, failure_delay: 0s}",
           "auth: {htpasswd: /h, failure_delay: 10s, max_failure_delay: 5s}",
           "auth: {htpasswd: /h, verified_ttl: 0s}",
       }) {
    ServeConfig b;
    EXPECT_FALSE(LoadServeConfig(bad, &b).ok()) << bad;
  }
  // Each error names its key.
  for (auto [yaml, key] : {
           std::pair{"auth: {htpasswd: /h, failure_window: soon}", "auth.failure_window"},
           {"auth: {htpasswd: /h, max_failure_delay: soon}", "auth.max_failure_delay"},
           {"auth: {htpasswd: /h, address_failures: 0}", "auth.address_failures"},
           {"auth: {htpasswd: /h, user_failures: 5000}", "auth.user_failures"},
           // The lockout's settings are gone: the error says what replaced them.
           {"auth: {htpasswd: /h, max_failures: 5}", "auth.user_failures"},
           {"auth: {htpasswd: /h, lockout: 1m}", "auth.lockout is no longer a setting"},
       }) {
    ServeConfig d;
    Status bad = LoadServeConfig(yaml, &d);
    EXPECT_NE(bad.message().find(key), std::string::npos) << yaml << ": " << bad.ToString();
  }
}

TEST(ServeConfigTest, BackingRegistryAsUrlOrMapping) {
  auto b = ParseBackingUrl("https://123456789012.dkr.ecr.eu-west-1.amazonaws.com/cache/");
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(b->registry.url, "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com");
  EXPECT_EQ(b->options.prefix, "cache");
  b = ParseBackingUrl("http://127.0.0.1:5001");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->options.prefix, "");
  EXPECT_FALSE(ParseBackingUrl("registry.example.com/cache").ok());  // no scheme
  EXPECT_FALSE(ParseBackingUrl("https://host/Bad_Prefix/").ok());
  EXPECT_FALSE(ParseBackingUrl("https:///cache").ok());

  ServeConfig c;
  ASSERT_TRUE(LoadServeConfig("backing: http://127.0.0.1:5001/team/cache", &c).ok());
  ASSERT_TRUE(c.backing.has_value());
  EXPECT_EQ(c.backing->options.prefix, "team/cache");
  ServeConfig m;
  Status s = LoadServeConfig(R"(
backing:
  url: https://harbor.example.com
  prefix: mirror
  username: robot
  password: secret
  upload_threads: 4
  max_queue: 500
)",
                             &m);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(m.backing->options.prefix, "mirror");
  EXPECT_EQ(m.backing->options.threads, 4);
  EXPECT_EQ(m.backing->options.max_queue, 500u);
  ASSERT_TRUE(m.backing->registry.credentials.has_value());
  ServeConfig bad;
  EXPECT_FALSE(LoadServeConfig("backing: {prefix: x}", &bad).ok());
  EXPECT_FALSE(LoadServeConfig("backing: {url: 'https://h', upload_threads: 0}", &bad).ok());
  EXPECT_FALSE(LoadServeConfig("backing: {url: 'https://h', colour: red}", &bad).ok());
}

TEST(ServeConfigTest, TlsKeys) {
  ServeConfig c;
  EXPECT_FALSE(c.server.tls.enabled());
  Status s = LoadServeConfig(R"(
tls:
  cert: /etc/regcache/tls.crt
  key: /etc/regcache/tls.key
  client_ca: /etc/regcache/clients.pem
  watch_interval: 30s
)",
                             &c);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(c.server.tls.enabled());
  EXPECT_EQ(c.server.tls.cert, "/etc/regcache/tls.crt");
  EXPECT_EQ(c.server.tls.key, "/etc/regcache/tls.key");
  EXPECT_EQ(c.server.tls.client_ca, "/etc/regcache/clients.pem");
  EXPECT_EQ(c.server.tls.watch_interval, std::chrono::seconds(30));
  ServeConfig bad;
  s = LoadServeConfig("tls: {cert: /c}", &bad);
  EXPECT_NE(s.message().find("'cert' and 'key'"), std::string::npos) << s.ToString();
  s = LoadServeConfig("tls: {cert: /c, key: /k, ca: /x}", &bad);
  EXPECT_NE(s.message().find("ca"), std::string::npos) << s.ToString();
  EXPECT_FALSE(LoadServeConfig("tls: /c", &bad).ok());
}

}  // namespace
}  // namespace regcache::app
