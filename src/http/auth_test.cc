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

// `htpasswd -nbB -C 10 carol 'long-cost pass'`: about 60 ms per check, against about 1 ms at 4.
constexpr const char* kCarol = "carol:$2y$10$zAB.GAhwFkR62CmSlRChv.E6r0/CL1uvvF8.ChkY34gB9ifGgBNe.";

TEST(HtpasswdTest, UnknownUsersCostAsMuchAsTheDearestKnownOne) {
  // The cheap entry first: the dummy hash must still be of the highest cost.
  auto h = Htpasswd::Parse(std::string(kBob) + "\n" + kCarol + "\n", "f");
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ((*h)->max_cost(), 10);
  auto time = [&](const char* user) {
    auto best = std::chrono::steady_clock::duration::max();
    for (int i = 0; i < 3; ++i) {
      auto t = std::chrono::steady_clock::now();
      EXPECT_FALSE((*h)->Verify(user, "wrong"));
      best = std::min(best, std::chrono::steady_clock::now() - t);
    }
    return best;
  };
  const auto known = time("carol");
  const auto unknown = time("mallory");
  // At cost 4 the unknown user would take a sixty-fourth of the time.
  EXPECT_GT(unknown * 3, known) << "unknown " << std::chrono::duration<double>(unknown).count()
                                << " s, carol " << std::chrono::duration<double>(known).count()
                                << " s";
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

using namespace std::chrono_literals;
using Scope = FailureLimiter::Scope;

FailureLimiter::Policy TestPolicy() {
  FailureLimiter::Policy p;
  p.user_failures = 2;
  p.failure_delay = 1s;
  p.max_failure_delay = 8s;
  p.window = 60s;
  p.address_failures = 100;
  p.max_tracked_addresses = 100;
  return p;
}

TEST(FailureLimiterTest, BacksOffOneUserNameFromOneAddressDoublingUpToTheCap) {
  FailureLimiter l(TestPolicy());
  const auto t0 = FailureLimiter::Clock::now();
  EXPECT_FALSE(l.AnyUserWaits(t0));
  EXPECT_EQ(l.RecordFailure("10.0.0.1", "alice", t0).user_wait_s, 0);
  EXPECT_EQ(l.RecordFailure("10.0.0.1", "alice", t0).user_wait_s, 0);
  EXPECT_EQ(l.Check("10.0.0.1", "alice", Scope::kUserAndAddress, t0), 0);  // two are free
  auto f = l.RecordFailure("10.0.0.1", "alice", t0);
  EXPECT_EQ(f.failures, 3);
  EXPECT_EQ(f.user_wait_s, 1);
  EXPECT_TRUE(l.AnyUserWaits(t0 + 500ms));
  EXPECT_EQ(l.Check("10.0.0.1", "alice", Scope::kUserAndAddress, t0 + 500ms), 1);
  EXPECT_EQ(l.Check("10.0.0.1", "alice", Scope::kUser, t0 + 500ms), 1);
  // Nobody else waits: not another user behind the same address, not alice elsewhere.
  EXPECT_EQ(l.Check("10.0.0.1", "bob", Scope::kUserAndAddress, t0 + 500ms), 0);
  EXPECT_EQ(l.Check("10.0.0.2", "alice", Scope::kUserAndAddress, t0 + 500ms), 0);
  EXPECT_EQ(l.Check("10.0.0.1", "alice", Scope::kUserAndAddress, t0 + 1s), 0);
  EXPECT_FALSE(l.AnyUserWaits(t0 + 1s));
  // Each further failure doubles the wait, up to the cap.
  int64_t waits[5];
  for (int i = 0; i < 5; ++i) waits[i] = l.RecordFailure("10.0.0.1", "alice", t0 + 2s).user_wait_s;
  EXPECT_EQ(std::vector<int64_t>(waits, waits + 5), (std::vector<int64_t>{2, 4, 8, 8, 8}));
  EXPECT_EQ(l.Check("10.0.0.1", "alice", Scope::kUser, t0 + 9s), 1);
}

TEST(FailureLimiterTest, ASuccessOrAQuietWindowStartsOver) {
  FailureLimiter l(TestPolicy());
  const auto t0 = FailureLimiter::Clock::now();
  for (int i = 0; i < 3; ++i) (void)l.RecordFailure("a", "alice", t0);
  EXPECT_GT(l.Check("a", "alice", Scope::kUserAndAddress, t0), 0);
  l.RecordSuccess("a", "alice");  // the typo, then the right password (after the wait)
  EXPECT_EQ(l.Check("a", "alice", Scope::kUserAndAddress, t0), 0);
  EXPECT_EQ(l.RecordFailure("a", "alice", t0 + 1s).failures, 1);
  // Failures further apart than the window never add up.
  FailureLimiter spaced(TestPolicy());
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(spaced.RecordFailure("a", "alice", t0 + i * 61s).user_wait_s, 0) << i;
  }
}

TEST(FailureLimiterTest, AnAddressSprayingUserNamesSpendsItsBudget) {
  FailureLimiter::Policy p = TestPolicy();
  p.address_failures = 5;
  p.window = 50s;  // one failure per 10 s once the five are spent
  FailureLimiter l(p);
  const auto t0 = FailureLimiter::Clock::now();
  for (int i = 0; i < 4; ++i) {
    EXPECT_FALSE(l.RecordFailure("10.0.0.1", "user" + std::to_string(i), t0).address_spent) << i;
  }
  EXPECT_TRUE(l.RecordFailure("10.0.0.1", "user4", t0).address_spent);
  EXPECT_EQ(l.Check("10.0.0.1", "someone", Scope::kUserAndAddress, t0), 10);
  // A credential verified recently is not held back by the address's budget.
  EXPECT_EQ(l.Check("10.0.0.1", "carol", Scope::kUser, t0), 0);
  EXPECT_EQ(l.Check("10.0.0.2", "someone", Scope::kUserAndAddress, t0), 0);
  EXPECT_EQ(l.Check("10.0.0.1", "someone", Scope::kUserAndAddress, t0 + 10s), 0);
  // Guesses the budget refuses count against their user name: after two, carol waits from this
  // address even with credentials verified recently (no free guessing against them).
  FailureLimiter m(p);
  for (int i = 0; i < 5; ++i) (void)m.RecordFailure("10.0.0.1", "user" + std::to_string(i), t0);
  for (int i = 0; i < 3; ++i)
    EXPECT_GT(m.Check("10.0.0.1", "carol", Scope::kUserAndAddress, t0), 0);
  EXPECT_EQ(m.Check("10.0.0.1", "carol", Scope::kUser, t0), 1);
  EXPECT_EQ(m.Check("10.0.0.1", "dave", Scope::kUser, t0), 0);
}

TEST(FailureLimiterTest, RemembersABoundedNumberOfAddresses) {
  FailureLimiter::Policy p = TestPolicy();
  p.max_tracked_addresses = 4;
  p.address_failures = 2;
  p.window = 10s;
  FailureLimiter l(p);
  const auto t0 = FailureLimiter::Clock::now();
  for (int i = 0; i < 50; ++i) (void)l.RecordFailure("10.0.1." + std::to_string(i), "u", t0);
  EXPECT_LE(l.tracked(), 4u);
  // An address that spent its budget survives pruning while it waits, once the others are quiet.
  EXPECT_TRUE(l.RecordFailure("10.0.1.49", "v", t0 + 1s).address_spent);
  for (int i = 0; i < 4; ++i) (void)l.RecordFailure("10.0.1.49", "v", t0 + 1s);
  for (int i = 0; i < 4; ++i) (void)l.RecordFailure("x" + std::to_string(i), "u", t0 + 12s);
  EXPECT_GT(l.Check("10.0.1.49", "w", Scope::kUserAndAddress, t0 + 12s), 0);
  EXPECT_LE(l.tracked(), 4u);
}

// The time every Authenticator in these tests reads.
Authenticator::Clock::time_point test_now = Authenticator::Clock::now();
Authenticator::Clock::time_point TestNow() { return test_now; }

using Check = Authenticator::Check;

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
    auto a = Authenticator::Create(o, &metrics_, &TestNow);
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
  Check check = Check::kKnownGood;
  Status s = a->Screen("", "127.0.0.1", &check);
  EXPECT_EQ(s.code(), Code::kUnauthenticated);
  EXPECT_EQ(check, Check::kDone);
  EXPECT_EQ(a->Screen("Bearer abc", "127.0.0.1", &check).code(), Code::kUnauthenticated);
  EXPECT_EQ(a->Screen(Basic(":"), "127.0.0.1", &check).code(), Code::kUnauthenticated);
  EXPECT_EQ(a->Screen("Basic Og", "127.0.0.1", &check).code(), Code::kUnauthenticated);
  EXPECT_EQ(check, Check::kDone);  // an empty user and password is no login attempt

  const std::string good = Basic("bob:hunter2");
  EXPECT_FALSE(a->Recognized(good));
  ASSERT_TRUE(a->Screen(good, "127.0.0.1", &check).ok());
  EXPECT_EQ(check, Check::kUnknown);
  ASSERT_TRUE(a->Verify(good, "127.0.0.1").ok());
  EXPECT_TRUE(a->Recognized(good));
  EXPECT_TRUE(a->Recognized("basic   " + Base64Encode("bob:hunter2") + " "));
  ASSERT_TRUE(a->Screen(good, "127.0.0.1", &check).ok());
  EXPECT_EQ(check, Check::kDone);  // remembered: no second bcrypt run
  EXPECT_FALSE(a->Recognized(Basic("bob:hunter3")));
  EXPECT_EQ(metrics_.Get("regcache_auth_failures_total", ""), 0u);
}

TEST_F(AuthenticatorTest, AGuesserBehindASharedAddressSlowsOnlyItsOwnUserName) {
  AuthOptions o;
  o.user_failures = 2;
  auto a = Make(o);
  ASSERT_TRUE(a);
  const std::string nat = "10.1.1.1";
  const std::string alice = Basic("alice:s3cret pass");
  const std::string bob = Basic("bob:hunter2");
  ASSERT_TRUE(a->Verify(bob, nat).ok());  // bob works from behind the NAT
  for (int i = 0; i < 6; ++i) {
    const Status s = a->Verify(Basic("alice:guess" + std::to_string(i)), nat);
    EXPECT_EQ(s.code(), i < 3 ? Code::kUnauthenticated : Code::kRateLimited) << i;
  }
  EXPECT_EQ(metrics_.Get("regcache_auth_failures_total", ""), 3u);
  Check check;
  Status s = a->Screen(alice, nat, &check);
  EXPECT_EQ(s.code(), Code::kRateLimited);
  EXPECT_EQ(upstream::RetryAfterSeconds(s), 1);
  // Bob, already verified or not, and alice from elsewhere: not held back.
  EXPECT_TRUE(a->Screen(bob, nat, &check).ok());
  EXPECT_EQ(check, Check::kDone);
  EXPECT_TRUE(a->Screen(Basic("bob:typo"), nat, &check).ok());
  EXPECT_EQ(check, Check::kUnknown);
  EXPECT_TRUE(a->Screen(alice, "10.1.1.2", &check).ok());
  ASSERT_TRUE(a->Verify(alice, "10.1.1.2").ok());
  // Alice's verified credential from the NAT waits out the back-off too: the guesser must not
  // learn which guess was right meanwhile.
  EXPECT_FALSE(a->Recognized(alice));
  EXPECT_EQ(a->Screen(alice, nat, &check).code(), Code::kRateLimited);
  EXPECT_TRUE(a->Screen(alice, "10.1.1.2", &check).ok());
  EXPECT_EQ(check, Check::kDone);
  // A back-off, not a wall: after the wait (1 s) alice may try again; her next failure waits 2 s.
  test_now += std::chrono::seconds(1);
  EXPECT_TRUE(a->Recognized(alice));
  EXPECT_EQ(a->Verify(Basic("alice:guess9"), nat).code(), Code::kUnauthenticated);
  s = a->Screen(alice, nat, &check);
  EXPECT_EQ(upstream::RetryAfterSeconds(s), 2);
  test_now += std::chrono::seconds(2);
  EXPECT_TRUE(a->Screen(alice, nat, &check).ok());
  EXPECT_GE(metrics_.Get("regcache_auth_throttled_total", ""), 4u);
}

TEST_F(AuthenticatorTest, CredentialsThatVerifiedBeforeGoAheadOfGuesses) {
  auto a = Make();
  ASSERT_TRUE(a);
  const std::string bob = Basic("bob:hunter2");
  ASSERT_TRUE(a->Verify(bob, "10.0.0.1").ok());
  test_now += std::chrono::minutes(6);  // past verified_ttl: bcrypt must run again
  Check check;
  ASSERT_TRUE(a->Screen(bob, "10.0.0.2", &check).ok());
  EXPECT_EQ(check, Check::kKnownGood);
  ASSERT_TRUE(a->Screen(Basic("bob:hunter3"), "10.0.0.2", &check).ok());
  EXPECT_EQ(check, Check::kUnknown);
  ASSERT_TRUE(a->Screen(Basic("mallory:x"), "10.0.0.2", &check).ok());
  EXPECT_EQ(check, Check::kUnknown);
  ASSERT_TRUE(a->Verify(bob, "10.0.0.2").ok());
  EXPECT_TRUE(a->Recognized(bob));
  test_now += Authenticator::kKnownGoodFor;
  ASSERT_TRUE(a->Screen(bob, "10.0.0.2", &check).ok());
  EXPECT_EQ(check, Check::kUnknown);  // a day without a login: no longer known
}

TEST_F(AuthenticatorTest, APasswordLongerThanBcryptReadsIsRefused) {
  // `htpasswd -nbB -C 4 dora <72 bytes>`: what bcrypt reads of any longer password too.
  const std::string p72 =
      "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz";
  ASSERT_EQ(p72.size(), kBcryptMaxPasswordBytes);
  Write("dora:$2y$04$YnkbBZEMvFQwvP71sVc.Les6xOd9OaztSYeA4nXtXYnw1IxMxKLfC\n");
  auto a = Make();
  ASSERT_TRUE(a);
  EXPECT_TRUE(a->Verify(Basic("dora:" + p72), "10.0.0.1").ok());
  EXPECT_EQ(a->Verify(Basic("dora:" + p72 + "x"), "10.0.0.2").code(), Code::kUnauthenticated);
  EXPECT_EQ(a->Verify(Basic("dora:" + p72 + "-anything"), "10.0.0.3").code(),
            Code::kUnauthenticated);
  EXPECT_EQ(metrics_.Get("regcache_auth_failures_total", ""), 2u);
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
  b.address_failures = 0;
  EXPECT_FALSE(ValidateAuthOptions(b).ok());
  b.address_failures = 1;
  b.failure_delay = std::chrono::seconds(10);
  b.max_failure_delay = std::chrono::seconds(5);
  EXPECT_FALSE(ValidateAuthOptions(b).ok());
  b.max_failure_delay = std::chrono::seconds(10);
  EXPECT_TRUE(ValidateAuthOptions(b).ok());
  b.htpasswd = "";
  EXPECT_FALSE(ValidateAuthOptions(b).ok());
}

TEST_F(AuthenticatorTest, ReloadSwapsUsersAndForgetsVerifiedCredentials) {
  auto a = Make();
  ASSERT_TRUE(a);
  const std::string bob = Basic("bob:hunter2");
  ASSERT_TRUE(a->Verify(bob, "127.0.0.1").ok());
  ASSERT_TRUE(a->Recognized(bob));
  // The same file again (a reload for something else): what verified stays verified.
  ASSERT_TRUE(a->Reload().ok());
  EXPECT_TRUE(a->Recognized(bob));
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
