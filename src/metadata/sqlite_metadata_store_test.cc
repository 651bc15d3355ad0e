#include <fcntl.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "metadata/corrupt_for_test.h"
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

class MetadataDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/regcache-meta-XXXXXX";
    dir_ = mkdtemp(tmpl);
    path_ = dir_ + "/meta.db";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // The moved-aside copies of corrupt databases (not their WALs).
  std::vector<std::string> CorruptCopies() {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(dir_)) {
      std::string name = e.path().filename().string();
      if (name.rfind("meta.db.corrupt-", 0) == 0 && !name.ends_with("-wal")) out.push_back(name);
    }
    return out;
  }

  // A store with `tags` tags under hub/a/b (v0…), a link and a manifest type, closed again.
  void Fill(int tags) {
    auto m = OpenSqliteMetadataStore(path_).value();
    for (int i = 0; i < tags; ++i) {
      ASSERT_TRUE(m->PutTag("hub", "a/b", "v" + std::to_string(i), {digest_, "t", 1, 10, 10}).ok());
    }
    ASSERT_TRUE(m->Link("hub", "a/b", digest_, ContentKind::kBlob, 42).ok());
    ASSERT_TRUE(m->PutManifestType(digest_, "application/vnd.oci.image.manifest.v1+json").ok());
  }

  std::string dir_, path_;
  oci::Digest digest_ = oci::Digest::Of("content");
};

TagListRecord Page(size_t bytes, int64_t at = 1) {
  return TagListRecord{200, std::string(bytes, 'x'), "application/json", "", at};
}

TEST_F(MetadataDirTest, TagListsAreBoundedPerRepositoryInTotalAndInBytes) {
  MetadataOptions options;
  options.tag_lists = TagListLimits{400, 3, 5, 800};  // max body, per repository, rows, bytes
  auto m = OpenSqliteMetadataStore(path_, options).value();
  auto has = [&](const std::string& repo, const std::string& q) {
    return m->GetTagList("hub", repo, q).value().has_value();
  };
  // Per repository: the newest three pages stay.
  for (const char* q : {"?n=1", "?n=2", "?n=3", "?n=4"}) {
    ASSERT_TRUE(m->PutTagList("hub", "a/b", q, Page(10)).ok());
  }
  EXPECT_FALSE(has("a/b", "?n=1"));
  EXPECT_TRUE(has("a/b", "?n=2") && has("a/b", "?n=3") && has("a/b", "?n=4"));
  // Writing a page again makes it the newest.
  ASSERT_TRUE(m->PutTagList("hub", "a/b", "?n=2", Page(10)).ok());
  ASSERT_TRUE(m->PutTagList("hub", "a/b", "?n=5", Page(10)).ok());
  EXPECT_FALSE(has("a/b", "?n=3"));
  EXPECT_TRUE(has("a/b", "?n=2"));
  // In total: five rows, the oldest go first, whichever repository they belong to.
  for (const char* repo : {"c/1", "c/2", "c/3"}) {
    ASSERT_TRUE(m->PutTagList("hub", repo, "", Page(10)).ok());
  }
  EXPECT_FALSE(has("a/b", "?n=4"));
  EXPECT_TRUE(has("a/b", "?n=2") && has("a/b", "?n=5") && has("c/1", "") && has("c/3", ""));
  // In bytes: three 300-byte pages pass 800, so the oldest go until the rest fit.
  for (const char* repo : {"d/1", "d/2", "d/3"}) {
    ASSERT_TRUE(m->PutTagList("hub", repo, "", Page(300)).ok());
  }
  EXPECT_TRUE(has("d/2", "") && has("d/3", ""));
  EXPECT_FALSE(has("d/1", "") || has("c/1", "") || has("c/3", ""));
  // Too big to store: relayed by the caller, nothing stored, nothing evicted for it.
  ASSERT_TRUE(m->PutTagList("hub", "e/1", "", Page(401)).ok());
  EXPECT_FALSE(has("e/1", ""));
  EXPECT_TRUE(has("d/3", ""));
  // A lower budget (the evictor's share of a small cap) applies at the next write.
  m->SetTagListBudget(350);
  ASSERT_TRUE(m->PutTagList("hub", "f/1", "", Page(20)).ok());
  EXPECT_TRUE(has("f/1", "") && has("d/3", ""));
  EXPECT_FALSE(has("d/2", ""));
  ASSERT_TRUE(m->PutTagList("hub", "f/2", "", Page(351)).ok());
  EXPECT_FALSE(has("f/2", "")) << "larger than the whole budget";
  m->SetTagListBudget(1u << 30);  // never above the configured bound
  for (const char* repo : {"g/1", "g/2", "g/3", "g/4"}) {
    ASSERT_TRUE(m->PutTagList("hub", repo, "", Page(300)).ok());
  }
  EXPECT_FALSE(has("g/1", ""));
}

TEST_F(MetadataDirTest, AFloodOfDistinctTagListQueriesCannotGrowTheFile) {
  // The flood: an 87 KB list cached once per distinct query. A budget of 1 MiB (a
  // twentieth of a 20 MiB cap) holds the file near it however many queries come.
  auto m = OpenSqliteMetadataStore(path_).value();
  m->SetTagListBudget(1u << 20);
  const std::string body(87 * 1024, 't');
  for (int i = 0; i < 500; ++i) {
    TagListRecord r{200, body, "application/json", "", 100 + i};
    ASSERT_TRUE(m->PutTagList("hub", "team/big", "?n=" + std::to_string(i + 1), r).ok());
  }
  m.reset();  // the last connection checkpoints the WAL into the file
  const auto bytes = std::filesystem::file_size(path_);
  EXPECT_LT(bytes, 3u << 20) << "500 x 87 KB would be 43 MB";
  EXPECT_LE(testing::QueryInt(path_, "SELECT total(size) FROM tag_lists"), 1 << 20);
}

TEST_F(MetadataDirTest, MigratingToVersion4DropsAFloodedTagListTable) {
  {
    auto m = OpenSqliteMetadataStore(path_).value();
    ASSERT_TRUE(m->PutTag("hub", "a/b", "v1", {digest_, "t", 1, 10, 10}).ok());
  }
  {
    // A version-3 store as the flood left it: the old table, thousands of copies of a list.
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    const std::string sql =
        "DROP TABLE tag_lists; CREATE TABLE tag_lists (upstream TEXT NOT NULL, repo TEXT NOT "
        "NULL, query TEXT NOT NULL, status INTEGER NOT NULL, body BLOB NOT NULL, content_type "
        "TEXT NOT NULL, link TEXT NOT NULL, fetched_at INTEGER NOT NULL, PRIMARY KEY (upstream, "
        "repo, query)); WITH RECURSIVE i(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM i WHERE n < "
        "300) INSERT INTO tag_lists SELECT 'hub', 'team/big', '?junk=' || n, 200, "
        "randomblob(65536), 'application/json', '', 1 FROM i; PRAGMA user_version=3;";
    ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
  }
  EXPECT_GT(std::filesystem::file_size(path_), 15u << 20);
  {
    auto m = OpenSqliteMetadataStore(path_).value();
    EXPECT_TRUE(m->GetTag("hub", "a/b", "v1").value().has_value()) << "tags are kept";
    EXPECT_FALSE(m->GetTagList("hub", "team/big", "?junk=1").value().has_value());
    ASSERT_TRUE(m->PutTagList("hub", "team/big", "", Page(10)).ok());
  }
  EXPECT_LT(std::filesystem::file_size(path_), 1u << 20) << "the space went back at once";
  EXPECT_EQ(testing::QueryInt(path_, "PRAGMA user_version"), 4);
}

TEST_F(MetadataDirTest, AGarbageHeaderIsReplacedAtOpen) {
  Fill(10);
  ASSERT_TRUE(testing::OverwritePage(path_, 1));
  auto m = OpenSqliteMetadataStore(path_);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)->Replacements(), 1u);
  EXPECT_NE((*m)->Degraded().find("corrupt"), std::string::npos) << (*m)->Degraded();
  ASSERT_EQ(CorruptCopies().size(), 1u);
  EXPECT_NE((*m)->Degraded().find(CorruptCopies()[0]), std::string::npos);
  // A fresh database: what was there is gone (fetched again from upstreams), writes work.
  EXPECT_FALSE((*m)->GetTag("hub", "a/b", "v1").value().has_value());
  EXPECT_FALSE((*m)->Linked("hub", "a/b", digest_).value().has_value());
  ASSERT_TRUE((*m)->PutTag("hub", "a/b", "v1", {digest_, "t", 1, 10, 10}).ok());
  EXPECT_TRUE((*m)->GetTag("hub", "a/b", "v1").value().has_value());
  EXPECT_TRUE((*m)->CheckIntegrity().ok());
  EXPECT_EQ((*m)->Replacements(), 1u);
  m->reset();
  auto again = OpenSqliteMetadataStore(path_).value();  // the new one is a sound database
  EXPECT_EQ(again->Replacements(), 0u);
  EXPECT_EQ(again->Degraded(), "");
  EXPECT_TRUE(again->GetTag("hub", "a/b", "v1").value().has_value());
}

TEST_F(MetadataDirTest, ACorruptPageFoundByAStatementReplacesTheDatabaseAndTheCallGoesOn) {
  Fill(2000);  // several pages of tags: the table's root is an interior page
  const int64_t root = testing::RootPage(path_, "tags");
  ASSERT_GT(root, 1);
  ASSERT_TRUE(testing::OverwritePage(path_, root));
  auto m = OpenSqliteMetadataStore(path_).value();  // opening reads only the header and schema
  EXPECT_EQ(m->Replacements(), 0u);
  // The lookup meets the damage; the database is replaced, and the lookup answers from the
  // fresh one (not cached), instead of failing.
  auto tag = m->GetTag("hub", "a/b", "v1");
  ASSERT_TRUE(tag.ok()) << tag.status().ToString();
  EXPECT_FALSE(tag->has_value());
  EXPECT_EQ(m->Replacements(), 1u);
  EXPECT_EQ(CorruptCopies().size(), 1u);
  EXPECT_FALSE(m->Linked("hub", "a/b", digest_).value().has_value());
  ASSERT_TRUE(m->PutTag("hub", "a/b", "v1", {digest_, "t", 1, 10, 10}).ok());
  EXPECT_TRUE(m->GetTag("hub", "a/b", "v1").value().has_value());
}

TEST_F(MetadataDirTest, QuickCheckFindsAPageNoLookupTouched) {
  Fill(2000);
  const int64_t pages = testing::QueryInt(path_, "PRAGMA page_count");
  ASSERT_GT(pages, 8);
  auto m = OpenSqliteMetadataStore(path_).value();
  EXPECT_TRUE(m->CheckIntegrity().ok());
  EXPECT_EQ(m->Replacements(), 0u) << "a sound database is left alone";
  m.reset();
  ASSERT_TRUE(testing::OverwritePage(path_, pages / 2));
  m = OpenSqliteMetadataStore(path_).value();
  EXPECT_EQ(m->Replacements(), 0u);
  EXPECT_TRUE(m->CheckIntegrity().ok());
  EXPECT_EQ(m->Replacements(), 1u);
  EXPECT_NE(m->Degraded().find("quick_check"), std::string::npos) << m->Degraded();
  EXPECT_TRUE(m->CheckIntegrity().ok());
  EXPECT_EQ(m->Replacements(), 1u);
}

TEST_F(MetadataDirTest, KeepsOnlyTheNewestCorruptCopies) {
  MetadataOptions options;
  options.keep_corrupt = 2;
  for (int i = 0; i < 4; ++i) {
    Fill(1);
    ASSERT_TRUE(testing::OverwritePage(path_, 1, i + 1));
    auto m = OpenSqliteMetadataStore(path_, options).value();
    EXPECT_EQ(m->Replacements(), 1u);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // distinct stamps
  }
  auto copies = CorruptCopies();
  ASSERT_EQ(copies.size(), 2u);
  std::sort(copies.begin(), copies.end());
  // The newest two: their garbage is the third and fourth seed's.
  const std::string expected = dir_ + "/expected";
  for (size_t i = 0; i < copies.size(); ++i) {
    std::vector<char> want(16), got(16);
    std::ofstream(expected, std::ios::trunc).close();
    ASSERT_TRUE(testing::OverwritePage(expected, 1, static_cast<uint32_t>(i + 3)));
    int a = ::open((dir_ + "/expected").c_str(), O_RDONLY),
        b = ::open((dir_ + "/" + copies[i]).c_str(), O_RDONLY);
    ASSERT_EQ(::read(a, want.data(), 16), 16);
    ASSERT_EQ(::read(b, got.data(), 16), 16);
    ::close(a);
    ::close(b);
    EXPECT_EQ(want, got) << copies[i];
  }
}

TEST_F(MetadataDirTest, ReplacedWhileOtherThreadsUseItWithoutAFailedCall) {
  Fill(2000);
  auto m = OpenSqliteMetadataStore(path_).value();
  // Readers of the tags table (which gets damaged) and writers of another one: a write to the
  // damaged table would put a good copy of the page in the WAL, hiding the damage.
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0}, calls{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; !stop; ++i) {
        const std::string tag = "v" + std::to_string((i * 7 + t) % 2000);
        if (!m->GetTag("hub", "a/b", tag).ok()) ++failures;
        if (!m->Link("hub", "x/" + std::to_string(t), oci::Digest::Of(tag), ContentKind::kBlob, 1)
                 .ok())
          ++failures;
        ++calls;
      }
    });
  }
  while (calls < 200) std::this_thread::yield();
  ASSERT_TRUE(testing::CorruptLivePage(
      path_, testing::RootPage(path_, "tags"),
      "INSERT INTO backing_work VALUES (2, 'c/hub/a', 'sha256:00', '', 0)"));
  for (int i = 0; i < 500 && m->Replacements() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const int after = calls + 200;
  while (calls < after) std::this_thread::yield();
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_EQ(m->Replacements(), 1u);
  EXPECT_EQ(failures.load(), 0) << "the call that met the damage ran again on the new database";
  EXPECT_TRUE(m->Linked("hub", "x/0", oci::Digest::Of("v0")).ok());
}

}  // namespace
}  // namespace regcache::metadata
