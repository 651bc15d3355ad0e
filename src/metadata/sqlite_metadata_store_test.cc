#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "metadata/metadata_store.h"

namespace regcache::metadata {
namespace {

TEST(SqliteMetadataStoreTest, TagsLinksAndTypesSurviveReopen) {
  char tmpl[] = "/tmp/regcache-meta-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  const std::string path = dir + "/meta.db";
  auto d1 = oci::Digest::Of("one");
  auto d2 = oci::Digest::Of("two");
  {
    auto m = OpenSqliteMetadataStore(path);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    EXPECT_FALSE((*m)->GetTag("docker.io", "library/ruby", "3.3")->has_value());
    TagRecord r{d1, "application/vnd.oci.image.index.v1+json", 123, 100, 100};
    ASSERT_TRUE((*m)->PutTag("docker.io", "library/ruby", "3.3", r).ok());
    ASSERT_TRUE((*m)->TouchTagChecked("docker.io", "library/ruby", "3.3", 200).ok());
    ASSERT_TRUE((*m)->Link("docker.io", "library/ruby", d2, ContentKind::kBlob, 42).ok());
    ASSERT_TRUE((*m)->Link("docker.io", "library/ruby", d2, ContentKind::kBlob, 0).ok());
    ASSERT_TRUE((*m)->PutManifestType(d1, "application/vnd.oci.image.index.v1+json").ok());
  }
  auto m = OpenSqliteMetadataStore(path).value();
  auto tag = m->GetTag("docker.io", "library/ruby", "3.3").value();
  ASSERT_TRUE(tag.has_value());
  EXPECT_EQ(tag->digest, d1);
  EXPECT_EQ(tag->size, 123u);
  EXPECT_EQ(tag->checked_at, 200);
  EXPECT_EQ(m->TagAccessedAt("docker.io", "library/ruby", "3.3").value(), 200);
  ASSERT_TRUE(m->TouchTagAccessed("docker.io", "library/ruby", "3.3", 300).ok());
  EXPECT_EQ(m->TagAccessedAt("docker.io", "library/ruby", "3.3").value(), 300);
  EXPECT_EQ(m->GetTag("docker.io", "library/ruby", "3.3").value()->checked_at, 200);
  EXPECT_EQ(m->Linked("docker.io", "library/ruby", d2).value(), std::optional<uint64_t>(42));
  EXPECT_FALSE(m->Linked("docker.io", "library/other", d2)->has_value());
  EXPECT_FALSE(m->Linked("ghcr.io", "library/ruby", d2)->has_value());
  EXPECT_EQ(m->GetManifestType(d1).value(),
            std::optional<std::string>("application/vnd.oci.image.index.v1+json"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace regcache::metadata
