#include <gtest/gtest.h>

#include "http/errors.h"
#include "http/range.h"
#include "http/route.h"
#include "http/server.h"

namespace regcache::http {
namespace {

TEST(ServerTest, TheDefaultConnectionCapFitsDescriptorsAndMemory) {
  constexpr uint64_t GiB = uint64_t{1} << 30;
  // Plenty of memory: the descriptor limit decides, less what files and upstreams need.
  EXPECT_EQ(DefaultMaxConnections(65536, 64 * GiB, false), 65536u - 1024);
  EXPECT_EQ(DefaultMaxConnections(1024, 64 * GiB, true), 512u);
  // systemd's 524288 descriptors in a 1 GiB container: a quarter of the memory decides, at
  // 16 KiB a plain connection and 128 KiB a TLS one.
  EXPECT_EQ(DefaultMaxConnections(524288, GiB, false), 16384u);
  EXPECT_EQ(DefaultMaxConnections(524288, GiB, true), 2048u);
  // Never below 64 for lack of memory (but never above what the descriptors allow).
  EXPECT_EQ(DefaultMaxConnections(524288, 1 << 20, true), 64u);
  EXPECT_EQ(DefaultMaxConnections(100, 1 << 20, true), 50u);
}

TEST(RangeTest, Forms) {
  auto r = ParseRange("bytes=0-99", 1000);
  EXPECT_EQ(r.kind, ByteRange::kPartial);
  EXPECT_EQ(r.start, 0u);
  EXPECT_EQ(r.length, 100u);
  r = ParseRange("bytes=900-", 1000);
  EXPECT_EQ(r.length, 100u);
  r = ParseRange("bytes=-10", 1000);
  EXPECT_EQ(r.start, 990u);
  r = ParseRange("bytes=990-5000", 1000);
  EXPECT_EQ(r.length, 10u);
  EXPECT_EQ(ParseRange("", 1000).kind, ByteRange::kFull);
  EXPECT_EQ(ParseRange("bytes=0-1,5-6", 1000).kind, ByteRange::kFull);
  for (const char* bad :
       {"bytes=1000-", "bytes=5-4", "bytes=a-b", "bytes=-0", "bytes=", "bytes=-", "garbage"}) {
    EXPECT_EQ(ParseRange(bad, 1000).kind, ByteRange::kUnsatisfiable) << bad;
  }
  // An unknown unit is ignored (RFC 9110), not refused.
  EXPECT_EQ(ParseRange("items=0-1", 1000).kind, ByteRange::kFull);
  EXPECT_EQ(ParseRange("Bytes=0-1", 1000).kind, ByteRange::kPartial);
}

std::string Find(const std::string& n) {
  if (n == "docker.io" || n == "registry-1.docker.io") return "docker.io";
  if (n == "ghcr.io") return "ghcr.io";
  return "";
}
bool IsHub(const std::string& u) { return u == "docker.io"; }

TEST(RouteTest, EndpointsAndThreeRoutingForms) {
  Endpoint ep;
  const std::string d = "sha256:" + std::string(64, 'a');
  auto r = ParseTarget("/v2/library/ruby/manifests/3.3", &ep);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->kind, RouteKind::kManifest);
  EXPECT_EQ(r->name, "library/ruby");
  EXPECT_EQ(r->reference, "3.3");
  auto c = ChooseUpstream(*r, Find, "docker.io", IsHub);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->upstream, "docker.io");
  EXPECT_EQ(c->repository, "library/ruby");

  r = ParseTarget("/v2/ruby/blobs/" + d, &ep);  // dockerd, single component
  ASSERT_TRUE(r.ok());
  c = ChooseUpstream(*r, Find, "docker.io", IsHub);
  EXPECT_EQ(c->repository, "library/ruby");

  r = ParseTarget("/v2/ghcr.io/org/app/manifests/v1", &ep);  // podman path prefix
  c = ChooseUpstream(*r, Find, "docker.io", IsHub);
  EXPECT_EQ(c->upstream, "ghcr.io");
  EXPECT_EQ(c->repository, "org/app");

  r = ParseTarget("/v2/org/app/manifests/v1?ns=ghcr.io", &ep);  // containerd
  c = ChooseUpstream(*r, Find, "docker.io", IsHub);
  EXPECT_EQ(c->upstream, "ghcr.io");
  EXPECT_EQ(c->ns, "ghcr.io");
  r = ParseTarget("/v2/library/ruby/manifests/3?ns=docker.io", &ep);
  c = ChooseUpstream(*r, Find, "ghcr.io", IsHub);
  EXPECT_EQ(c->upstream, "docker.io");
  r = ParseTarget("/v2/a/b/manifests/3?ns=evil.example.com", &ep);
  EXPECT_EQ(ChooseUpstream(*r, Find, "docker.io", IsHub).status().code(), Code::kNotFound);
  // The configured name is echoed, never the raw value.
  r = ParseTarget("/v2/library/ruby/manifests/3?ns=registry-1.docker.io", &ep);
  EXPECT_EQ(ChooseUpstream(*r, Find, "ghcr.io", IsHub)->ns, "docker.io");
  for (const char* bad :
       {"%ff", "docker.io%0d%0a%0d%0a", "hub%0d%0aX-Injected:%201", "a%20b", ""}) {
    r = ParseTarget(std::string("/v2/a/b/manifests/3?ns=") + bad, &ep);
    ASSERT_TRUE(r.ok()) << bad;
    EXPECT_EQ(ChooseUpstream(*r, Find, "docker.io", IsHub).status().code(), Code::kInvalidArgument)
        << bad;
  }
  // A registry-like first component that is not configured is not a repository of the default.
  for (const char* other : {"/v2/quay.io/library/alpine/manifests/3.19",
                            "/v2/localhost:5000/x/manifests/v1", "/v2/localhost/x/manifests/v1"}) {
    r = ParseTarget(other, &ep);
    ASSERT_TRUE(r.ok()) << other;
    EXPECT_EQ(ChooseUpstream(*r, Find, "docker.io", IsHub).status().code(), Code::kNotFound)
        << other;
  }

  r = ParseTarget("/v2/library/ruby/tags/list?n=10&last=a", &ep);
  EXPECT_EQ(r->kind, RouteKind::kTags);
  EXPECT_EQ(r->query.at("n"), "10");
  r = ParseTarget("/v2/library/ruby/referrers/" + d + "?artifactType=x", &ep);
  EXPECT_EQ(r->kind, RouteKind::kReferrers);
  r = ParseTarget("/v2/library/ruby/blobs/uploads/", &ep);
  EXPECT_EQ(r->kind, RouteKind::kUpload);
  EXPECT_EQ(ParseTarget("/v2/", &ep)->kind, RouteKind::kBase);
  EXPECT_EQ(ParseTarget("/metrics", &ep)->kind, RouteKind::kMetrics);
  EXPECT_EQ(ParseTarget("/", &ep)->kind, RouteKind::kStatus);
  EXPECT_EQ(ParseTarget("/?refresh=1", &ep)->kind, RouteKind::kStatus);
  EXPECT_FALSE(ParseTarget("/index.html", &ep).ok());
}

TEST(RouteTest, RejectsTraversalEncodingAndBadReferences) {
  Endpoint ep;
  for (const char* bad :
       {"/v2/../etc/manifests/x", "/v2/a/../b/manifests/x", "/v2/a%2fb/manifests/x",
        "/v2/a//b/manifests/x", "/v2/a/%2e%2e/blobs/sha256:aa"}) {
    auto r = ParseTarget(bad, &ep);
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << bad;
  }
  auto r = ParseTarget("/v2/a/blobs/sha256:zz", &ep);
  EXPECT_FALSE(r.ok());
  EXPECT_STREQ(ErrorFor(r.status().code(), ep).code, "DIGEST_INVALID");
  // A name no tag can have is an unknown manifest (the OCI conformance suite's
  // .INVALID_MANIFEST_NAME), not a malformed push.
  for (const char* bad : {"/v2/a/manifests/-bad", "/v2/a/manifests/.INVALID_MANIFEST_NAME"}) {
    r = ParseTarget(bad, &ep);
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_EQ(ErrorFor(r.status().code(), ep).status, 404) << bad;
    EXPECT_STREQ(ErrorFor(r.status().code(), ep).code, "MANIFEST_UNKNOWN") << bad;
  }
  r = ParseTarget("/v2/a/manifests/sha256:totallywrong", &ep);
  EXPECT_STREQ(ErrorFor(r.status().code(), ep).code, "MANIFEST_INVALID");
  EXPECT_EQ(ParseTarget("/v3/x", &ep).status().code(), Code::kNotFound);
  EXPECT_EQ(ParseTarget("/v2/x/unknown", &ep).status().code(), Code::kNotFound);
  auto route = ParseTarget("/v2/UPPER/case/manifests/x", &ep);
  ASSERT_TRUE(route.ok());
  EXPECT_EQ(ChooseUpstream(*route, Find, "docker.io", IsHub).status().code(),
            Code::kInvalidArgument);
}

TEST(RouteTest, TagListQueriesKeepOnlyWhatTheSpecDefines) {
  Endpoint ep;
  auto key = [&](const std::string& target) {
    auto r = ParseTarget("/v2/team/big/tags/list" + target, &ep);
    EXPECT_TRUE(r.ok()) << target << ": " << r.status().ToString();
    return r.ok() ? r->tag_list.String() : std::string("<error>");
  };
  // Junk, routing's ns and unknown parameters are dropped; n and last are kept, in one form.
  EXPECT_EQ(key(""), "");
  EXPECT_EQ(key("?junk=1"), "");
  EXPECT_EQ(key("?n=5000&junk=1"), "?n=5000");
  EXPECT_EQ(key("?junk=2&n=5000"), "?n=5000");
  EXPECT_EQ(key("?ns=docker.io&n=10"), "?n=10");
  EXPECT_EQ(key("?last=v1.2&n=10"), "?n=10&last=v1.2");
  EXPECT_EQ(key("?n=10&last=v1.2&x=%41"), "?n=10&last=v1.2");
  EXPECT_EQ(key("?last=v1"), "?last=v1");
  EXPECT_EQ(key("?n=007"), "?n=7");
  EXPECT_EQ(key("?n="), "");  // empty counts as absent, as distribution reads it
  EXPECT_EQ(key("?n=0"), "?n=0");
  EXPECT_EQ(ParseTarget("/v2/a/tags/list?n=0", &ep)->tag_list.n, std::optional<uint32_t>(0));
  // Huge: clamped (the spec lets a registry answer fewer with a Link to the rest).
  EXPECT_EQ(key("?n=10001"), "?n=10000");
  EXPECT_EQ(key("?n=999999"), "?n=10000");
  EXPECT_EQ(key("?n=99999999999999999999999999"), "?n=10000");
  EXPECT_EQ(key("?n=0000000000000000000000000000012"), "?n=12");
  // Not a number, or a last that is not a tag: a clear 400.
  for (const char* bad : {"?n=-1", "?n=abc", "?n=1e3", "?n=+5", "?n=%2B5", "?n=5%20", "?n=0x10",
                          "?last=-x", "?last=a/b", "?last=%00", "?last=.hidden"}) {
    auto r = ParseTarget(std::string("/v2/team/big/tags/list") + bad, &ep);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(ep, Endpoint::kTags) << bad;
    EXPECT_EQ(ErrorFor(r.status().code(), ep).status, 400) << bad;
    EXPECT_STREQ(ErrorFor(r.status().code(), ep).code, "PAGINATION_NUMBER_INVALID") << bad;
  }
  EXPECT_FALSE(ParseTarget("/v2/a/tags/list?last=" + std::string(129, 'a'), &ep).ok());
  EXPECT_TRUE(ParseTarget("/v2/a/tags/list?last=" + std::string(128, 'a'), &ep).ok());
}

TEST(ErrorsTest, TableAndBody) {
  EXPECT_EQ(ErrorFor(Code::kNotFound, Endpoint::kBlob).status, 404);
  EXPECT_STREQ(ErrorFor(Code::kNotFound, Endpoint::kManifest).code, "MANIFEST_UNKNOWN");
  EXPECT_STREQ(ErrorFor(Code::kRateLimited, Endpoint::kManifest).code, "TOOMANYREQUESTS");
  EXPECT_EQ(ErrorFor(Code::kUnavailable, Endpoint::kBlob).status, 503);
  EXPECT_EQ(ErrorFor(Code::kUnauthenticated, Endpoint::kOther).status, 401);
  EXPECT_STREQ(ErrorFor(Code::kUnauthenticated, Endpoint::kOther).code, "UNAUTHORIZED");
  EXPECT_EQ(ErrorFor(Code::kDenied, Endpoint::kManifest).status, 403);
  EXPECT_STREQ(ErrorFor(Code::kDenied, Endpoint::kManifest).code, "DENIED");
  // An upstream refusing this cache's credentials is not the client's business to fix.
  EXPECT_EQ(UpstreamErrorFor(Code::kUnauthenticated, Endpoint::kBlob).status, 403);
  EXPECT_STREQ(UpstreamErrorFor(Code::kUnauthenticated, Endpoint::kBlob).code, "DENIED");
  EXPECT_EQ(UpstreamErrorFor(Code::kNotFound, Endpoint::kBlob).status, 404);
  EXPECT_EQ(ErrorBody("BLOB_UNKNOWN", "x"),
            R"({"errors":[{"code":"BLOB_UNKNOWN","detail":{},"message":"x"}]})");
  // Invalid UTF-8 in a message (client input) must not throw.
  std::string body = ErrorBody("NAME_INVALID", std::string("bad \xff\xfe name"));
  EXPECT_NE(body.find("NAME_INVALID"), std::string::npos);
}

}  // namespace
}  // namespace regcache::http
