#include "upstream/auth.h"

#include <gtest/gtest.h>

#include "upstream/registry_client_impl.h"

namespace regcache::upstream {
namespace {

TEST(WwwAuthenticateTest, DockerHubStyleBearer) {
  auto cs = ParseWwwAuthenticate(
      R"(Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ruby:pull,push")");
  ASSERT_EQ(cs.size(), 1u);
  EXPECT_EQ(cs[0].scheme, "bearer");
  EXPECT_EQ(cs[0].Param("realm"), "https://auth.docker.io/token");
  EXPECT_EQ(cs[0].Param("service"), "registry.docker.io");
  EXPECT_EQ(cs[0].Param("scope"), "repository:library/ruby:pull,push");
}

TEST(WwwAuthenticateTest, BasicAndMultipleChallengesAndEscapes) {
  auto basic = ParseWwwAuthenticate(R"(Basic realm="Registry Realm")");
  ASSERT_EQ(basic.size(), 1u);
  EXPECT_EQ(basic[0].scheme, "basic");
  EXPECT_EQ(basic[0].Param("realm"), "Registry Realm");

  auto two = ParseWwwAuthenticate(
      R"(Basic realm="a, b", Bearer realm="https://t/x",error="insufficient_scope")");
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[0].Param("realm"), "a, b");
  EXPECT_EQ(two[1].scheme, "bearer");
  EXPECT_EQ(two[1].Param("error"), "insufficient_scope");

  auto escaped = ParseWwwAuthenticate(R"(Bearer realm="quo\"te",service=unquoted)");
  ASSERT_EQ(escaped.size(), 1u);
  EXPECT_EQ(escaped[0].Param("realm"), "quo\"te");
  EXPECT_EQ(escaped[0].Param("service"), "unquoted");
}

TEST(WwwAuthenticateTest, MalformedInputDoesNotCrash) {
  for (const char* h :
       {"", "=", "Bearer", "Bearer realm=\"unterminated", ",,,", "Bearer =x", "Bearer realm"}) {
    auto cs = ParseWwwAuthenticate(h);
    for (const auto& c : cs) EXPECT_FALSE(c.scheme.empty());
  }
}

TEST(TokenResponseTest, TokenOrAccessTokenAndExpiry) {
  auto now = std::chrono::steady_clock::now();
  auto t1 = ParseTokenResponse(R"({"token":"abc","expires_in":300})", now);
  ASSERT_TRUE(t1.ok());
  EXPECT_EQ(t1->value, "abc");
  EXPECT_EQ(t1->expires_at - now, std::chrono::seconds(290));
  auto t2 = ParseTokenResponse(R"({"access_token":"xyz"})", now);
  ASSERT_TRUE(t2.ok());
  EXPECT_EQ(t2->value, "xyz");
  EXPECT_EQ(t2->expires_at - now, std::chrono::seconds(50));  // default 60, renewed 10 s early
  auto t3 = ParseTokenResponse(R"({"token":"a","expires_in":5})", now);
  EXPECT_EQ(t3->expires_at - now, std::chrono::seconds(50));  // never less than 60
  EXPECT_EQ(ParseTokenResponse("{}", now).status().code(), Code::kUnauthenticated);
  EXPECT_EQ(ParseTokenResponse("<html>", now).status().code(), Code::kUnauthenticated);
  EXPECT_EQ(ParseTokenResponse(R"({"token":7})", now).status().code(), Code::kUnauthenticated);
}

// Found with fuzz_www_authenticate: an expires_in beyond ~292 years overflowed steady_clock's
// nanoseconds (undefined behaviour; typically an expiry in the past, so no token was ever reused).
TEST(TokenResponseTest, HugeExpiryIsCappedNotOverflowed) {
  auto now = std::chrono::steady_clock::now();
  for (const char* body : {R"({"token":"a","expires_in":10000000000})",
                           R"({"token":"a","expires_in":9223372036854775807})"}) {
    auto t = ParseTokenResponse(body, now);
    ASSERT_TRUE(t.ok()) << body;
    EXPECT_GE(t->expires_at - now, std::chrono::hours(1)) << body;
    EXPECT_LE(t->expires_at - now, std::chrono::hours(24)) << body;
  }
}

TEST(UserPassTest, Parses) {
  auto c = ParseUserPass("AWS:pa:ss");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->username, "AWS");
  EXPECT_EQ(c->password, "pa:ss");
  EXPECT_FALSE(ParseUserPass("nopass").ok());
  EXPECT_FALSE(ParseUserPass(":x").ok());
}

TEST(RateLimitTest, ParsesHubHeaders) {
  auto v = ParseRateLimitHeader("100;w=21600");
  EXPECT_EQ(v.count, 100);
  EXPECT_EQ(v.window_s, 21600);
  EXPECT_EQ(ParseRateLimitHeader("97").count, 97);
  EXPECT_EQ(ParseRateLimitHeader("junk").count, -1);
}

// Found by fuzz_www_authenticate: numbers past int64 came back negative, which the sync
// rate-limit guard would read as "quota exhausted". Out of range is as unknown as junk.
TEST(RateLimitTest, OutOfRangeIsUnknownNotNegative) {
  auto v = ParseRateLimitHeader("15118446744073709551;w=9223372036854775808");
  EXPECT_EQ(v.count, -1);
  EXPECT_EQ(v.window_s, -1);
  EXPECT_EQ(ParseRateLimitHeader("9223372036854775807").count, 9223372036854775807);
}

TEST(StatusFromResponseTest, MapsCodesAndQuotesRegistry) {
  HttpResponse r;
  r.status = 404;
  r.body = R"({"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]})";
  Status s = StatusFromResponse(r, "GET x");
  EXPECT_EQ(s.code(), Code::kNotFound);
  EXPECT_NE(s.message().find("MANIFEST_UNKNOWN"), std::string::npos);
  r.status = 429;
  r.body = "";
  r.headers.Add("Retry-After", "30");
  s = StatusFromResponse(r, "GET x");
  EXPECT_EQ(s.code(), Code::kRateLimited);
  EXPECT_NE(s.message().find("retry after 30"), std::string::npos);
  r = HttpResponse{};
  r.status = 400;
  r.body = R"({"errors":[{"code":"DIGEST_INVALID"}]})";
  EXPECT_EQ(StatusFromResponse(r, "x").code(), Code::kIntegrity);
  r.status = 503;
  r.body = "<html>garbage";
  EXPECT_EQ(StatusFromResponse(r, "x").code(), Code::kUnavailable);
  r.status = 401;
  EXPECT_EQ(StatusFromResponse(r, "x").code(), Code::kUnauthenticated);
  r.status = 403;
  EXPECT_EQ(StatusFromResponse(r, "x").code(), Code::kDenied);
}

TEST(UrlTest, OriginAndResolve) {
  EXPECT_EQ(UrlOrigin("https://Reg.io:5000/v2/x?y"), "https://reg.io:5000");
  EXPECT_EQ(ResolveUrl("http://h:1/v2/a/blobs/uploads/", "/v2/a/blobs/uploads/u1?_state=x"),
            "http://h:1/v2/a/blobs/uploads/u1?_state=x");
  EXPECT_EQ(ResolveUrl("http://h/v2/a", "https://cdn.example/x"), "https://cdn.example/x");
  EXPECT_EQ(ResolveUrl("https://h/v2/a", "//cdn/x"), "https://cdn/x");
  EXPECT_TRUE(IsLoopbackHost("127.0.0.1:5000"));
  EXPECT_TRUE(IsLoopbackHost("localhost"));
  EXPECT_TRUE(IsLoopbackHost("[::1]:80"));
  EXPECT_FALSE(IsLoopbackHost("10.0.0.1:5000"));
  EXPECT_FALSE(IsLoopbackHost("localhost.evil.com"));
}

}  // namespace
}  // namespace regcache::upstream
