#include "oci/reference.h"

#include <gtest/gtest.h>

namespace regcache::oci {
namespace {

struct Case {
  const char* input;
  const char* registry;
  const char* repository;
  const char* tag;
};

TEST(ReferenceTest, NormalizesLikeDistribution) {
  const Case cases[] = {
      {"ruby", "docker.io", "library/ruby", "latest"},
      {"ruby:2.7.1-slim", "docker.io", "library/ruby", "2.7.1-slim"},
      {"docker.io/ruby", "docker.io", "library/ruby", "latest"},
      {"index.docker.io/library/ruby:3", "docker.io", "library/ruby", "3"},
      {"registry-1.docker.io/bitnami/redis:7", "docker.io", "bitnami/redis", "7"},
      {"bitnami/redis", "docker.io", "bitnami/redis", "latest"},
      {"localhost/foo", "localhost", "foo", "latest"},
      {"localhost:5000/foo/bar:v1", "localhost:5000", "foo/bar", "v1"},
      {"127.0.0.1:5000/a__b/c-d.e:tag_1", "127.0.0.1:5000", "a__b/c-d.e", "tag_1"},
      {"ghcr.io/org/app:1.0", "ghcr.io", "org/app", "1.0"},
      {"123456789012.dkr.ecr.us-east-1.amazonaws.com/mirror/ruby:3.3",
       "123456789012.dkr.ecr.us-east-1.amazonaws.com", "mirror/ruby", "3.3"},
      {"[::1]:5000/foo", "[::1]:5000", "foo", "latest"},
      {"Foo/bar", "Foo", "bar", "latest"},  // an uppercase first component is a host
      {"localhost:5000", "docker.io", "library/localhost", "5000"},
  };
  for (const auto& c : cases) {
    auto ref = ParseReference(c.input);
    ASSERT_TRUE(ref.ok()) << c.input << ": " << ref.status().ToString();
    EXPECT_EQ(ref->registry, c.registry) << c.input;
    EXPECT_EQ(ref->repository, c.repository) << c.input;
    EXPECT_EQ(ref->tag, c.tag) << c.input;
  }
}

TEST(ReferenceTest, DigestAndTagPlusDigest) {
  const std::string hex(64, 'a');
  auto by_digest = ParseReference("ruby@sha256:" + hex);
  ASSERT_TRUE(by_digest.ok());
  EXPECT_EQ(by_digest->tag, "");
  EXPECT_EQ(by_digest->Identifier(), "sha256:" + hex);
  auto both = ParseReference("ruby:3@sha256:" + hex);
  ASSERT_TRUE(both.ok());
  EXPECT_EQ(both->tag, "3");
  EXPECT_EQ(both->String(), "docker.io/library/ruby:3@sha256:" + hex);
  EXPECT_EQ(both->Identifier(), "sha256:" + hex);
}

TEST(ReferenceTest, NoDefaultTagWhenAsked) {
  auto ref = ParseReference("ruby", /*default_tag=*/false);
  ASSERT_TRUE(ref.ok());
  EXPECT_EQ(ref->tag, "");
}

void ExpectInvalid(const std::string& input, const std::string& mentions) {
  auto ref = ParseReference(input);
  ASSERT_FALSE(ref.ok()) << input;
  EXPECT_EQ(ref.status().code(), Code::kInvalidArgument);
  EXPECT_NE(ref.status().message().find(mentions), std::string::npos)
      << input << " -> " << ref.status().message();
}

TEST(ReferenceTest, RejectsMalformedInputNamingThePart) {
  ExpectInvalid("", "empty");
  ExpectInvalid("Ruby", "lowercase");
  ExpectInvalid("docker.io/Library/ruby", "lowercase");
  ExpectInvalid("ruby:", "tag");
  ExpectInvalid("ruby:-bad", "tag");
  ExpectInvalid("ruby:" + std::string(129, 'a'), "tag");
  ExpectInvalid("ruby@sha256:abc", "64");
  ExpectInvalid("ruby@md5:" + std::string(32, 'a'), "algorithm");
  ExpectInvalid("ruby@sha256:" + std::string(64, 'A'), "lowercase hex");
  ExpectInvalid("-host.io/foo", "registry");
  ExpectInvalid("host.io:99999/foo", "registry");
  ExpectInvalid("host..io/foo", "registry");
  ExpectInvalid("foo//bar", "repository");
  ExpectInvalid("foo/bar-", "repository");
  ExpectInvalid("foo/.bar", "repository");
  ExpectInvalid("foo bar", "whitespace");
  ExpectInvalid(std::string(64, 'a'), "64-character");
  ExpectInvalid("host.io/", "missing repository");
  ExpectInvalid("host.io/" + std::string(250, 'a'), "255");
}

TEST(ReferenceTest, RepositoryAndTagValidators) {
  EXPECT_TRUE(IsValidRepository("library/ruby"));
  EXPECT_TRUE(IsValidRepository("a.b_c__d---e/f"));
  EXPECT_FALSE(IsValidRepository("a___b"));
  EXPECT_FALSE(IsValidRepository("../etc"));
  EXPECT_FALSE(IsValidRepository("a/../b"));
  EXPECT_FALSE(IsValidRepository("a%2fb"));
  EXPECT_FALSE(IsValidRepository(""));
  EXPECT_TRUE(IsValidTag("v1.0-rc_1"));
  EXPECT_TRUE(IsValidTag("_x"));
  EXPECT_FALSE(IsValidTag(".x"));
}

TEST(ReferenceTest, RegistryHostNormalization) {
  EXPECT_EQ(NormalizeRegistryHost("https://index.docker.io/v1/"), "docker.io");
  EXPECT_EQ(NormalizeRegistryHost("registry-1.docker.io"), "docker.io");
  EXPECT_EQ(NormalizeRegistryHost("HTTPS://Ghcr.io/"), "ghcr.io");
  EXPECT_EQ(NormalizeRegistryHost("localhost:5000"), "localhost:5000");
  EXPECT_EQ(RegistryApiHost("docker.io"), "registry-1.docker.io");
  EXPECT_EQ(RegistryApiHost("ghcr.io"), "ghcr.io");
}

// Found by fuzz_reference: blanks left between the host and the scheme or path survived, so
// normalizing was not idempotent and "index.docker.io /v1/" missed the Docker Hub alias.
TEST(ReferenceTest, RegistryHostNormalizationTrimsInnerBlanks) {
  EXPECT_EQ(NormalizeRegistryHost("ghcr.io /v2/"), "ghcr.io");
  EXPECT_EQ(NormalizeRegistryHost("https:// quay.io"), "quay.io");
  EXPECT_EQ(NormalizeRegistryHost("https://index.docker.io /v1/"), "docker.io");
  for (const char* h : {"ruby:-ba:500 /v1/y", "https://\t a/", "HTTP://X /", "a"}) {
    std::string once = NormalizeRegistryHost(h);
    EXPECT_EQ(NormalizeRegistryHost(once), once) << h;
  }
}

}  // namespace
}  // namespace regcache::oci
