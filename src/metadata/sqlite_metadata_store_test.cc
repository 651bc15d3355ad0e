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

TEST(SqliteMetadataStoreTest, FirstKnownLinkSizeWinsOverLaterClaims) {
  char tmpl[] = "/tmp/regcache-meta-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  auto m = OpenSqliteMetadataStore(dir + "/meta.db").value();
  auto d = oci::Digest::Of("layer");
  // A HEAD without Content-Length links size 0 (unknown); the manifest's size fills it in.
  ASSERT_TRUE(m->Link("hub", "a/b", d, ContentKind::kBlob, 0).ok());
  ASSERT_TRUE(m->Link("hub", "a/b", d, ContentKind::kBlob, 1000).ok());
  EXPECT_EQ(m->Linked("hub", "a/b", d).value(), std::optional<uint64_t>(1000));
  // A later, larger claim (a lying HEAD) does not replace it.
  ASSERT_TRUE(m->Link("hub", "a/b", d, ContentKind::kBlob, 2000).ok());
  EXPECT_EQ(m->Linked("hub", "a/b", d).value(), std::optional<uint64_t>(1000));
  std::filesystem::remove_all(dir);
}

TEST(SqliteMetadataStoreTest, TagListsDeletesAndBatchedAccess) {
  char tmpl[] = "/tmp/regcache-meta-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  auto m = OpenSqliteMetadataStore(dir + "/meta.db").value();
  EXPECT_FALSE(m->GetTagList("hub", "a/b", "?n=2")->has_value());
  TagListRecord page{200, std::string("{\"tags\":[\"v1\"]}\0x", 17), "application/json",
                     "</v2/a/b/tags/list?last=v1&n=2>; rel=\"next\"", 50};
  ASSERT_TRUE(m->PutTagList("hub", "a/b", "?n=2", page).ok());
  auto got = m->GetTagList("hub", "a/b", "?n=2").value();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->body, page.body);  // bytes, including a NUL
  EXPECT_EQ(got->link, page.link);
  EXPECT_EQ(got->status, 200);
  EXPECT_FALSE(m->GetTagList("hub", "a/b", "")->has_value());

  auto d = oci::Digest::Of("x");
  ASSERT_TRUE(m->PutTag("hub", "a/b", "v1", TagRecord{d, "t", 1, 10, 10}).ok());
  ASSERT_TRUE(m->PutTag("hub", "a/b", "v2", TagRecord{d, "t", 1, 10, 10}).ok());
  ASSERT_TRUE(m->TouchTagsAccessed({{"hub", "a/b", "v1", 500}, {"hub", "a/b", "v2", 5}}).ok());
  EXPECT_EQ(m->TagAccessedAt("hub", "a/b", "v1").value(), 500);
  EXPECT_EQ(m->TagAccessedAt("hub", "a/b", "v2").value(), 10);  // never moves backwards
  ASSERT_TRUE(m->DeleteTag("hub", "a/b", "v1").ok());
  EXPECT_FALSE(m->GetTag("hub", "a/b", "v1")->has_value());
  EXPECT_TRUE(m->DeleteTag("hub", "a/b", "absent").ok());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace regcache::metadata
