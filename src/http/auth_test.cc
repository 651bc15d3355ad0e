#include "http/auth.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "base/strings.h"
#include "upstream/registry_client.h"

namespace regcache::http {
namespace {

// Written by `htpasswd -nbB -C 5 alice 's3cret pass'` and `htpasswd -nbB -C 4 bob hunter2`.
constexpr const char* kAlice = "alice:$2y$05$5srJ3KjNJ7acy5G.yrxhs.XXVe4PyJ793/BVOBOWPI/LmLfwAh14.";
constexpr const char* kBob = "bob:$2y$04$8HxA2P.c.plS9keee.CHiuSo.Vs9IpMnMVW4j6pQ1m05N.vjQWXLe";

std::string Basic(const std::string& user_password) {
  return "Basic " + Base64Encode(user_password);
}

TEST(HtpasswdTest, VerifiesBcryptEntries) {
  auto h = Htpasswd::Parse(std::string("# team\n\n") + kAlice + "\r\n  " + kBob + "  \n", "f");
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ((*h)->size(), 2u);
  EXPECT_TRUE((*h)->Verify("alice", "s3cret pass"));
  EXPECT_TRUE((*h)->Verify("bob", "hunter2"));
  EXPECT_FALSE((*h)->Verify("alice", "s3cret pas"));
  EXPECT_FALSE((*h)->Verify("alice", "hunter2"));
  EXPECT_FALSE((*h)->Verify("bob", ""));
  EXPECT_FALSE((*h)->Verify("mallory", "hunter2"));
  EXPECT_FALSE((*h)->Verify("", ""));
  // A NUL byte must not cut the password short.
  EXPECT_FALSE((*h)->Verify("bob", std::string("hunter2\0x", 9)));
}

TEST(HtpasswdTest, RejectsWhatIsNotBcryptNamingTheLine) {
  struct Case {
    std::string text, wanted;
  } cases[] = {
      {std::string(kAlice) + "\ncarol:$apr1$KQOil3GN$oiTJ9EhyuA4LbRS93RbPo.\n",
       "f:2: user 'carol' has an MD5 (apr1) hash"},
      {"dave:{SHA}EfatjsUqKYSrqv18O1FlA3hcIHI=", "f:1: user 'dave' has a SHA-1 hash"},
      {"erin:plain", "f:1: user 'erin' has a crypt(3) or plain-text password"},
      {"frank:$2y$05$short", "a malformed bcrypt hash"},
      {"gina:$2y$99$5srJ3KjNJ7acy5G.yrxhs.XXVe4PyJ793/BVOBOWPI/LmLfwAh14.", "malformed bcrypt"},
      {"justaname", "f:1: not a user:hash line"},
      {":$2y$04$8HxA2P.c.plS9keee.CHiuSo.Vs9IpMnMVW4j6pQ1m05N.vjQWXLe", "not a user:hash line"},
      {std::string(kBob) + "\n" + kBob, "f:2: user 'bob' appears twice"},
      {"# nobody\n\n", "f: no users"},
  };
  for (const auto& c : cases) {
    auto h = Htpasswd::Parse(c.text, "f");
    ASSERT_FALSE(h.ok()) << c.text;
    EXPECT_EQ(h.status().code(), Code::kInvalidArgument);
    EXPECT_NE(h.status().message().find(c.wanted), std::string::npos) << h.status().message();
  }
  auto missing = Htpasswd::Load("/nonexistent/htpasswd");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/htpasswd"), std::string::npos);
}

TEST(FailureLimiterTest, LocksAnAddressOutAfterTooManyFailuresInTheWindow) {
  using namespace std::chrono_literals;
  FailureLimiter l(3, 60s, 30s, 100);
  auto t0 = FailureLimiter::Clock::now();
  EXPECT_FALSE(l.AnyLocked(t0));
  EXPECT_FALSE(l.RecordFailure("10.0.0.1", t0));
  EXPECT_FALSE(l.RecordFailure("10.0.0.1", t0 + 1s));
  EXPECT_FALSE(l.RecordFailure("10.0.0.2", t0 + 1s));  // other addresses count apart
  EXPECT_EQ(l.LockedFor("10.0.0.1", t0 + 2s), 0);
  EXPECT_TRUE(l.RecordFailure("10.0.0.1", t0 + 2s));
  EXPECT_TRUE(l.AnyLocked(t0 + 3s));
  EXPECT_EQ(l.LockedFor("10.0.0.1", t0 + 2s), 30);
  EXPECT_EQ(l.LockedFor("10.0.0.1", t0 + 2s + 29500ms), 1);  // rounded up
  EXPECT_EQ(l.LockedFor("10.0.0.2", t0 + 3s), 0);
  EXPECT_EQ(l.LockedFor("10.0.0.1", t0 + 32s), 0);
  EXPECT_FALSE(l.AnyLocked(t0 + 32s));
  // After the lockout the count starts over.
  EXPECT_FALSE(l.RecordFailure("10.0.0.1", t0 + 33s));
  EXPECT_FALSE(l.RecordFailure("10.0.0.1", t0 + 34s));
}

TEST(FailureLimiterTest, FailuresSpreadOverMoreThanTheWindowDoNotLock) {
  using namespace std::chrono_literals;
  FailureLimiter l(2, 10s, 30s, 100);
  auto t0 = FailureLimiter::Clock::now();
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(l.RecordFailure("a", t0 + i * 11s)) << i;
  EXPECT_EQ(l.LockedFor("a", t0 + 60s), 0);
}

TEST(FailureLimiterTest, RemembersABoundedNumberOfAddresses) {
  using namespace std::chrono_literals;
  FailureLimiter l(2, 10s, 30s, 4);
  auto t0 = FailureLimiter::Clock::now();
  for (int i = 0; i < 50; ++i) (void)l.RecordFailure("10.0.1." + std::to_string(i), t0);
  EXPECT_LE(l.tracked(), 4u);
  // A locked-out address survives pruning while its lockout runs, once the others expired.
  EXPECT_TRUE(l.RecordFailure("10.0.1.49", t0 + 1s));
  for (int i = 0; i < 3; ++i) (void)l.RecordFailure("x" + std::to_string(i), t0 + 20s);
  (void)l.RecordFailure("y", t0 + 20s);
  EXPECT_GT(l.LockedFor("10.0.1.49", t0 + 20s), 0);
}

class AuthenticatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/regcache-htpasswd-XXXXXX";
    int fd = mkstemp(tmpl);
    ASSERT_GE(fd, 0);
    close(fd);
    path_ = tmpl;
    Write(std::string(kAlice) + "\n" + kBob + "\n");
  }
  void TearDown() override { std::remove(path_.c_str()); }
  void Write(const std::string& text) { std::ofstream(path_, std::ios::trunc) << text; }
  std::shared_ptr<Authenticator> Make(AuthOptions o = {}) {
    o.htpasswd = path_;
    auto a = Authenticator::Create(o, &metrics_);
    EXPECT_TRUE(a.ok()) << a.status().ToString();
    return a.ok() ? *a : nullptr;
  }

  std::string path_;
  cache::Metrics metrics_;
};

TEST_F(AuthenticatorTest, ChallengesThenVerifiesOnceThenRecognizes) {
  auto a = Make();
  ASSERT_TRUE(a);
  EXPECT_EQ(a->challenge(), "Basic realm=\"regcache\"");
  EXPECT_EQ(a->users(), 2u);
  bool verify = true;
  Status s = a->Screen("", "127.0.0.1", &verify);
  EXPECT_EQ(s.code(), Code::kUnauthenticated);
  EXPECT_FALSE(verify);
  EXPECT_EQ(a->Screen("Bearer abc", "127.0.0.1", &verify).code(), Code::kUnauthenticated);
  EXPECT_EQ(a->Screen(Basic(":"), "127.0.0.1", &verify).code(), Code::kUnauthenticated);
  EXPECT_EQ(a->Screen("Basic Og", "127.0.0.1", &verify).code(), Code::kUnauthenticated);
  EXPECT_FALSE(verify);  // an empty user and password is no login attempt

  const std::string good = Basic("bob:hunter2");
  EXPECT_FALSE(a->Recognized(good));
  ASSERT_TRUE(a->Screen(good, "127.0.0.1", &verify).ok());
  EXPECT_TRUE(verify);
  ASSERT_TRUE(a->Verify(good, "127.0.0.1").ok());
  EXPECT_TRUE(a->Recognized(good));
  EXPECT_TRUE(a->Recognized("basic   " + Base64Encode("bob:hunter2") + " "));
  ASSERT_TRUE(a->Screen(good, "127.0.0.1", &verify).ok());
  EXPECT_FALSE(verify);  // remembered: no second bcrypt run
  EXPECT_FALSE(a->Recognized(Basic("bob:hunter3")));
  EXPECT_EQ(metrics_.Get("regcache_auth_failures_total", ""), 0u);
}

TEST_F(AuthenticatorTest, WrongPasswordsAreRefusedThenTheAddressIsLockedOut) {
  AuthOptions o;
  o.max_failures = 3;
  auto a = Make(o);
  ASSERT_TRUE(a);
  const std::string good = Basic("alice:s3cret pass");
  ASSERT_TRUE(a->Verify(good, "10.1.1.1").ok());
  for (const auto& bad : {Basic("alice:nope"), Basic("mallory:x"), std::string("Basic !!!")}) {
    EXPECT_EQ(a->Verify(bad, "10.1.1.1").code(), Code::kUnauthenticated) << bad;
  }
  EXPECT_EQ(metrics_.Get("regcache_auth_failures_total", ""), 3u);
  bool verify = false;
  Status s = a->Screen(good, "10.1.1.1", &verify);
  EXPECT_EQ(s.code(), Code::kRateLimited);
  EXPECT_EQ(upstream::RetryAfterSeconds(s), 60);
  // Even a remembered credential: a locked-out address must not learn which guess was right.
  EXPECT_FALSE(a->Recognized(good));
  EXPECT_EQ(a->Verify(good, "10.1.1.1").code(), Code::kRateLimited);
  // Other addresses are not affected.
  ASSERT_TRUE(a->Screen(good, "10.1.1.2", &verify).ok());
  EXPECT_FALSE(verify);
  EXPECT_GE(metrics_.Get("regcache_auth_throttled_total", ""), 2u);
}

TEST_F(AuthenticatorTest, AnonymousPathsAndOptions) {
  auto a = Make();
  ASSERT_TRUE(a);
  EXPECT_FALSE(a->Required("/healthz"));
  EXPECT_FALSE(a->Required("/readyz"));
  EXPECT_FALSE(a->Required("/metrics"));
  EXPECT_TRUE(a->Required("/"));
  EXPECT_TRUE(a->Required("/v2/"));
  EXPECT_TRUE(a->Required("/v2/library/alpine/manifests/3"));
  AuthOptions o;
  o.anonymous = {"/healthz"};
  a = Make(o);
  ASSERT_TRUE(a);
  EXPECT_TRUE(a->Required("/metrics"));

  for (auto bad : {std::vector<std::string>{"/v2/"}, {"/v2"}, {"metrics"}, {"/x?y"}}) {
    AuthOptions b;
    b.htpasswd = path_;
    b.anonymous = bad;
    EXPECT_FALSE(ValidateAuthOptions(b).ok()) << bad[0];
  }
  AuthOptions b;
  b.htpasswd = path_;
  b.realm = "a\"b";
  EXPECT_FALSE(ValidateAuthOptions(b).ok());
  b.realm = "ok";
  b.max_failures = 0;
  EXPECT_FALSE(ValidateAuthOptions(b).ok());
  b.max_failures = 1;
  b.htpasswd = "";
  EXPECT_FALSE(ValidateAuthOptions(b).ok());
}

TEST_F(AuthenticatorTest, ReloadSwapsUsersAndForgetsVerifiedCredentials) {
  auto a = Make();
  ASSERT_TRUE(a);
  const std::string bob = Basic("bob:hunter2");
  ASSERT_TRUE(a->Verify(bob, "127.0.0.1").ok());
  ASSERT_TRUE(a->Recognized(bob));
  // An invalid file is refused and the old users stay.
  Write("carol:$apr1$KQOil3GN$oiTJ9EhyuA4LbRS93RbPo.\n");
  EXPECT_EQ(a->Reload().code(), Code::kInvalidArgument);
  EXPECT_TRUE(a->Recognized(bob));
  EXPECT_EQ(a->users(), 2u);
  // Bob is removed: his remembered verification goes with the old set.
  Write(std::string(kAlice) + "\n");
  ASSERT_TRUE(a->Reload().ok());
  EXPECT_EQ(a->users(), 1u);
  EXPECT_FALSE(a->Recognized(bob));
  EXPECT_EQ(a->Verify(bob, "127.0.0.1").code(), Code::kUnauthenticated);
  EXPECT_TRUE(a->Verify(Basic("alice:s3cret pass"), "127.0.0.1").ok());
}

TEST_F(AuthenticatorTest, CreateFailsOnABadFile) {
  Write("dave:{SHA}EfatjsUqKYSrqv18O1FlA3hcIHI=\n");
  AuthOptions o;
  o.htpasswd = path_;
  auto a = Authenticator::Create(o, nullptr);
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.status().message().find(path_ + ":1"), std::string::npos);
}

}  // namespace
}  // namespace regcache::http
