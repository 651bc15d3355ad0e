#include "oci/manifest.h"

#include <gtest/gtest.h>

namespace regcache::oci {
namespace {

const std::string kD1 = "sha256:" + std::string(64, '1');
const std::string kD2 = "sha256:" + std::string(64, '2');
const std::string kD3 = "sha256:" + std::string(64, '3');

std::string ImageManifest(const std::string& media_type_field) {
  return R"({"schemaVersion":2,)" + media_type_field +
         R"("config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" + kD1 +
         R"(","size":7},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":")" +
         kD2 +
         R"(","size":1024},{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":")" +
         kD3 + R"(","size":5,"urls":["https://example.invalid/x"]}]})";
}

TEST(ManifestTest, ParsesOciImageManifest) {
  auto m = ParseManifest(
      ImageManifest(R"("mediaType":"application/vnd.oci.image.manifest.v1+json",)"), "");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_FALSE(m->is_index);
  EXPECT_EQ(m->media_type, kOciManifest);
  ASSERT_TRUE(m->config);
  EXPECT_EQ(m->config->size, 7u);
  EXPECT_EQ(m->layers.size(), 2u);
  // The foreign layer is not a blob to copy.
  ASSERT_EQ(m->Blobs().size(), 2u);
  EXPECT_EQ(m->Blobs()[1].digest.str(), kD2);
}

TEST(ManifestTest, MediaTypeFromContentTypeOrInferred) {
  auto from_ct =
      ParseManifest(ImageManifest(""), std::string(kDockerManifestV2) + "; charset=utf-8");
  ASSERT_TRUE(from_ct.ok());
  EXPECT_EQ(from_ct->media_type, kDockerManifestV2);
  auto inferred = ParseManifest(ImageManifest(""), "application/octet-stream");
  ASSERT_TRUE(inferred.ok());
  EXPECT_EQ(inferred->media_type, kOciManifest);
}

TEST(ManifestTest, ParsesIndexWithPlatformsAndArtifacts) {
  std::string index =
      R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",
    "manifests":[
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" +
      kD1 +
      R"(","size":100,"platform":{"os":"linux","architecture":"amd64"}},
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" +
      kD2 +
      R"(","size":100,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" +
      kD3 +
      R"(","size":100,"artifactType":"application/vnd.example.sbom"}],
    "subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" +
      kD1 + R"(","size":100}})";
  auto m = ParseManifest(index, std::string(kOciIndex));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_TRUE(m->is_index);
  ASSERT_EQ(m->manifests.size(), 3u);
  EXPECT_EQ(m->manifests[1].platform->String(), "linux/arm64/v8");
  EXPECT_FALSE(m->manifests[2].platform);
  EXPECT_EQ(m->manifests[2].artifact_type, "application/vnd.example.sbom");
  ASSERT_TRUE(m->subject);

  auto filtered = FilterIndex(index, kOciIndex, {Digest::Parse(kD2).value()});
  ASSERT_TRUE(filtered.ok());
  auto fm = ParseManifest(*filtered, kOciIndex);
  ASSERT_TRUE(fm.ok());
  ASSERT_EQ(fm->manifests.size(), 1u);
  EXPECT_EQ(fm->manifests[0].digest.str(), kD2);
}

TEST(ManifestTest, RefusesSchema1Clearly) {
  auto m = ParseManifest(R"({"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]})", "");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), Code::kUnsupported);
  EXPECT_NE(m.status().message().find("schema1"), std::string::npos);
  EXPECT_EQ(ParseManifest("{}", kDockerManifestV1Signed).status().code(), Code::kUnsupported);
}

TEST(ManifestTest, RejectsMalformed) {
  const std::string bad[] = {
      "",
      "not json",
      "[]",
      R"({"schemaVersion":3})",
      R"({"schemaVersion":"2"})",
      R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"})",
      R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":{}})",
      R"({"schemaVersion":2,"mediaType":"text/plain","config":{}})",
      R"({"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:zz","size":1},"layers":[]})",
      R"({"schemaVersion":2,"config":{"mediaType":"x","digest":")" + kD1 +
          R"(","size":-1},"layers":[]})",
      R"({"schemaVersion":2,"config":{"mediaType":"x","digest":")" + kD1 +
          R"(","size":"1"},"layers":[]})",
      R"({"schemaVersion":2,"config":{"digest":")" + kD1 + R"(","size":1},"layers":[]})",
      R"({"schemaVersion":2,"manifests":[{"mediaType":"x","digest":")" + kD1 +
          R"(","size":1,"platform":{"os":1}}]})",
  };
  for (const auto& b : bad) {
    auto m = ParseManifest(b, "");
    EXPECT_FALSE(m.ok()) << b;
    EXPECT_EQ(m.status().code(), Code::kInvalidArgument) << b;
  }
  // mediaType field must agree with a manifest Content-Type.
  EXPECT_FALSE(
      ParseManifest(ImageManifest(R"("mediaType":"application/vnd.oci.image.manifest.v1+json",)"),
                    kDockerManifestV2)
          .ok());
  EXPECT_FALSE(ParseManifest(std::string(kMaxManifestBytes + 1, ' '), "").ok());
}

TEST(PlatformTest, ParseAndMatch) {
  auto p = ParsePlatform("linux/arm64");
  ASSERT_TRUE(p.ok());
  Platform have{"linux", "arm64", "v8", ""};
  EXPECT_TRUE(have.Matches(*p));
  EXPECT_TRUE(
      (Platform{"linux", "arm64", "", ""}).Matches(ParsePlatform("linux/arm64/v8").value()));
  EXPECT_FALSE((Platform{"linux", "arm", "v6", ""}).Matches(ParsePlatform("linux/arm/v7").value()));
  EXPECT_FALSE(ParsePlatform("linux").ok());
  EXPECT_FALSE(ParsePlatform("linux//v7").ok());
  EXPECT_FALSE(ParsePlatform("a/b/c/d").ok());
}

}  // namespace
}  // namespace regcache::oci
