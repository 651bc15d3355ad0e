#include <gtest/gtest.h>
#include <sqlite3.h>
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

TEST(SqliteMetadataStoreTest, MigratesAStoreFromBeforeVersioning) {
  char tmpl[] = "/tmp/regcache-meta-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  const std::string path = dir + "/meta.db";
  auto d = oci::Digest::Of("layer");
  {
    // The schema regcache 0.1 wrote, with user_version 0.
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    const std::string sql =
        "CREATE TABLE tags (upstream TEXT NOT NULL, repo TEXT NOT NULL, tag TEXT NOT NULL,"
        " digest TEXT NOT NULL, media_type TEXT NOT NULL, size INTEGER NOT NULL,"
        " fetched_at INTEGER NOT NULL, checked_at INTEGER NOT NULL, accessed_at INTEGER NOT NULL,"
        " PRIMARY KEY (upstream, repo, tag));"
        "CREATE TABLE manifest_types (digest TEXT PRIMARY KEY, media_type TEXT NOT NULL);"
        "CREATE TABLE repo_content (upstream TEXT NOT NULL, repo TEXT NOT NULL,"
        " digest TEXT NOT NULL, kind INTEGER NOT NULL, size INTEGER NOT NULL,"
        " PRIMARY KEY (upstream, repo, digest));"
        "INSERT INTO repo_content VALUES ('hub', 'library/old', '" +
        d.str() + "', 2, 42);";
    ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
  }
  auto m = OpenSqliteMetadataStore(path);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)->Linked("hub", "library/old", d).value(), std::optional<uint64_t>(42));
  ASSERT_TRUE((*m)->SaveBlobUsage({{d, 42, false, 100, 2}}, {}).ok());
  int rows = 0;
  ASSERT_TRUE((*m)->LoadBlobUsage([&](const BlobUsage& u) { rows += u.digest == d; }).ok());
  EXPECT_EQ(rows, 1);
  // Links written before versioning have no time: retention may take them once their
  // repository has no tag left.
  ASSERT_TRUE((*m)->PutTag("hub", "library/new", "v1", TagRecord{d, "t", 1, 1000, 1000}).ok());
  ASSERT_TRUE((*m)->Link("hub", "library/new", d, ContentKind::kBlob, 42).ok());
  auto r = (*m)->ExpireUnused(500);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->tags, 0);
  EXPECT_EQ(r->links, 1);  // library/old's
  EXPECT_FALSE((*m)->Linked("hub", "library/old", d)->has_value());
  EXPECT_TRUE((*m)->Linked("hub", "library/new", d)->has_value());
  r = (*m)->ExpireUnused(2000);  // library/new unused since 1000
  EXPECT_EQ(r->tags, 1);
  EXPECT_TRUE((*m)->Compact(100).ok());
  // Version 3's backing queue exists after the migration.
  ASSERT_TRUE((*m)->AddBackingWork({ContentKind::kBlob, "c/hub/a", d, ""}).ok());
  m->reset();
  // Reopening a migrated store is a no-op.
  ASSERT_TRUE(OpenSqliteMetadataStore(path).ok());
  std::filesystem::remove_all(dir);
}

TEST(SqliteMetadataStoreTest, BackingWorkSurvivesReopenInPushOrder) {
  char tmpl[] = "/tmp/regcache-meta-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  const std::string path = dir + "/meta.db";
  auto blob = oci::Digest::Of("layer"), manifest = oci::Digest::Of("manifest");
  {
    auto m = OpenSqliteMetadataStore(path).value();
    ASSERT_TRUE(m->AddBackingWork({ContentKind::kManifest, "c/hub/a", manifest, "v1"}).ok());
    ASSERT_TRUE(m->AddBackingWork({ContentKind::kManifest, "c/hub/a", manifest, ""}).ok());
    ASSERT_TRUE(m->AddBackingWork({ContentKind::kBlob, "c/hub/a", blob, ""}).ok());
    ASSERT_TRUE(m->AddBackingWork({ContentKind::kBlob, "c/hub/a", blob, ""}).ok());  // again
  }
  auto m = OpenSqliteMetadataStore(path).value();
  std::vector<BackingWork> got;
  ASSERT_TRUE(m->LoadBackingWork([&](const BackingWork& w) { got.push_back(w); }).ok());
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].kind, ContentKind::kBlob);
  EXPECT_EQ(got[1].tag, "");
  EXPECT_EQ(got[2].tag, "v1");
  ASSERT_TRUE(m->RemoveBackingWork(got[0]).ok());
  ASSERT_TRUE(m->RemoveBackingWork(got[0]).ok());  // absent: fine
  got.clear();
  ASSERT_TRUE(m->LoadBackingWork([&](const BackingWork& w) { got.push_back(w); }).ok());
  EXPECT_EQ(got.size(), 2u);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace regcache::metadata
