#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <utility>

#include "metadata/metadata_store.h"

namespace regcache::metadata {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS tags (
  upstream TEXT NOT NULL, repo TEXT NOT NULL, tag TEXT NOT NULL,
  digest TEXT NOT NULL, media_type TEXT NOT NULL, size INTEGER NOT NULL,
  fetched_at INTEGER NOT NULL, checked_at INTEGER NOT NULL, accessed_at INTEGER NOT NULL,
  PRIMARY KEY (upstream, repo, tag));
CREATE TABLE IF NOT EXISTS manifest_types (
  digest TEXT PRIMARY KEY, media_type TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS repo_content (
  upstream TEXT NOT NULL, repo TEXT NOT NULL, digest TEXT NOT NULL,
  kind INTEGER NOT NULL, size INTEGER NOT NULL,
  PRIMARY KEY (upstream, repo, digest));
CREATE TABLE IF NOT EXISTS tag_lists (
  upstream TEXT NOT NULL, repo TEXT NOT NULL, query TEXT NOT NULL,
  status INTEGER NOT NULL, body BLOB NOT NULL, content_type TEXT NOT NULL, link TEXT NOT NULL,
  fetched_at INTEGER NOT NULL,
  PRIMARY KEY (upstream, repo, query));
)sql";

// Version 2: blob usage for eviction, link times for retention.
constexpr int kSchemaVersion = 4;
constexpr const char* kSchemaV2 = R"sql(
ALTER TABLE repo_content ADD COLUMN linked_at INTEGER NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS blob_usage (
  digest TEXT PRIMARY KEY, size INTEGER NOT NULL, manifest INTEGER NOT NULL,
  last_access INTEGER NOT NULL, hits INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS tags_by_access ON tags (accessed_at);
)sql";

// Version 3: the backing registry's write-through queue.
constexpr const char* kSchemaV3 = R"sql(
CREATE TABLE IF NOT EXISTS backing_work (
  kind INTEGER NOT NULL, target TEXT NOT NULL, digest TEXT NOT NULL, tag TEXT NOT NULL,
  added_at INTEGER NOT NULL,
  PRIMARY KEY (kind, target, digest, tag));
)sql";

// Version 4: tag lists bounded (pages evicted oldest first by rowid, which grows with each
// write; body sizes summed through their own index). The old table is dropped: it is a cache,
// and one flooded by junk queries before the bounds existed may hold hundreds of megabytes.
constexpr const char* kSchemaV4 = R"sql(
DROP TABLE IF EXISTS tag_lists;
CREATE TABLE tag_lists (
  upstream TEXT NOT NULL, repo TEXT NOT NULL, query TEXT NOT NULL,
  status INTEGER NOT NULL, size INTEGER NOT NULL, content_type TEXT NOT NULL, link TEXT NOT NULL,
  fetched_at INTEGER NOT NULL, body BLOB NOT NULL,
  PRIMARY KEY (upstream, repo, query));
CREATE INDEX tag_lists_sizes ON tag_lists (size);
)sql";

constexpr const char* kCorruptPrefix = "metadata database is corrupt";
// How long /readyz reports a replacement, and how often opening a fresh database is retried
// when it failed.
constexpr int64_t kReportReplacementSeconds = 60;
constexpr int64_t kRetryOpenSeconds = 10;
// The WAL is checkpointed at 1000 pages (SQLite's default) and cut back to this after.
constexpr int64_t kJournalSizeLimit = 4 << 20;

bool IsCorruptCode(int rc) {
  rc &= 0xff;  // extended codes (SQLITE_CORRUPT_INDEX, …) share the primary code's low byte
  return rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB;
}

int64_t SteadySeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// "20250102T030405.678Z": sorts in time order, and two replacements in one second differ.
std::string UtcStamp() {
  auto now = std::chrono::system_clock::now();
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y%m%dT%H%M%S", &tm);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  char out[48];
  std::snprintf(out, sizeof(out), "%s.%03dZ", buf, static_cast<int>(ms % 1000));
  return out;
}

// One connection, serialized by a mutex: statements are tiny and SQLite in WAL mode commits in
// microseconds; this keeps the store simple and safe from any thread. Every call runs through
// Call(): a corruption seen by the call replaces the database once its statements are done,
// and the call runs once more on the fresh one (which lacks what was lost, like a cold cache).
class SqliteMetadataStore : public MetadataStore {
 public:
  SqliteMetadataStore(std::string path, MetadataOptions options)
      : path_(std::move(path)), options_(options), tag_list_budget_(options.tag_lists.bytes) {}
  ~SqliteMetadataStore() override { CloseDb(); }

  // The first open: a corrupt file is replaced; any other failure (a newer schema, a directory
  // that cannot be written) refuses to start, as before.
  Status Open() {
    std::lock_guard<std::mutex> lock(mu_);
    Status s = OpenFile();
    if (s.ok() || corrupt_.empty()) return s;
    Replace();
    return db_ ? Status::Ok() : s;
  }

  Result<std::optional<TagRecord>> GetTag(const std::string& upstream, const std::string& repo,
                                          const std::string& tag) override {
    return Call([&]() -> Result<std::optional<TagRecord>> {
      Stmt s(this,
             "SELECT digest, media_type, size, fetched_at, checked_at FROM tags "
             "WHERE upstream=? AND repo=? AND tag=?");
      s.Bind(1, upstream).Bind(2, repo).Bind(3, tag);
      int rc = s.Step();
      if (rc == SQLITE_DONE) return std::optional<TagRecord>();
      if (rc != SQLITE_ROW) return Error("reading tag");
      auto digest = oci::Digest::Parse(s.Text(0));
      if (!digest.ok()) return IoError("corrupt tag row for " + repo + ":" + tag);
      TagRecord r;
      r.digest = *digest;
      r.media_type = s.Text(1);
      r.size = static_cast<uint64_t>(s.Int(2));
      r.fetched_at = s.Int(3);
      r.checked_at = s.Int(4);
      return std::optional<TagRecord>(r);
    });
  }

  Status PutTag(const std::string& upstream, const std::string& repo, const std::string& tag,
                const TagRecord& r) override {
    return Call([&]() -> Status {
      Stmt s(this, "INSERT OR REPLACE INTO tags VALUES (?,?,?,?,?,?,?,?,?)");
      s.Bind(1, upstream).Bind(2, repo).Bind(3, tag).Bind(4, r.digest.str()).Bind(5, r.media_type);
      s.Bind(6, static_cast<int64_t>(r.size)).Bind(7, r.fetched_at).Bind(8, r.checked_at);
      s.Bind(9, r.checked_at);
      return s.Step() == SQLITE_DONE ? Status::Ok() : Error("writing tag");
    });
  }

  Status TouchTagChecked(const std::string& upstream, const std::string& repo,
                         const std::string& tag, int64_t now) override {
    return Call([&]() -> Status {
      Stmt s(this,
             "UPDATE tags SET checked_at=?, accessed_at=? WHERE upstream=? AND repo=? AND tag=?");
      s.Bind(1, now).Bind(2, now).Bind(3, upstream).Bind(4, repo).Bind(5, tag);
      return s.Step() == SQLITE_DONE ? Status::Ok() : Error("updating tag");
    });
  }

  Status LoadBlobUsage(const std::function<void(const BlobUsage&)>& found) override {
    return Call([&]() -> Status {
      Stmt s(this, "SELECT digest, size, manifest, last_access, hits FROM blob_usage");
      int rc;
      while ((rc = s.Step()) == SQLITE_ROW) {
        auto d = oci::Digest::Parse(s.Text(0));
        if (!d.ok()) continue;
        found(BlobUsage{*d, static_cast<uint64_t>(s.Int(1)), s.Int(2) != 0, s.Int(3),
                        static_cast<uint32_t>(s.Int(4))});
      }
      return rc == SQLITE_DONE ? Status::Ok() : Error("reading blob usage");
    });
  }

  Status SaveBlobUsage(const std::vector<BlobUsage>& upserts,
                       const std::vector<oci::Digest>& removed) override {
    return Call([&]() -> Status {
      RC_RETURN_IF_ERROR(Exec("BEGIN"));
      for (const auto& u : upserts) {
        Stmt s(this, "INSERT OR REPLACE INTO blob_usage VALUES (?,?,?,?,?)");
        s.Bind(1, u.digest.str()).Bind(2, static_cast<int64_t>(u.size));
        s.Bind(3, int64_t{u.manifest ? 1 : 0}).Bind(4, u.last_access);
        s.Bind(5, static_cast<int64_t>(u.hits));
        if (s.Step() != SQLITE_DONE) return Rollback("writing blob usage");
      }
      for (const auto& d : removed) {
        Stmt s(this, "DELETE FROM blob_usage WHERE digest=?");
        s.Bind(1, d.str());
        if (s.Step() != SQLITE_DONE) return Rollback("deleting blob usage");
      }
      return Commit();
    });
  }

  Status AddBackingWork(const BackingWork& w) override {
    return Call([&]() -> Status {
      Stmt s(this, "INSERT OR IGNORE INTO backing_work VALUES (?,?,?,?,strftime('%s','now'))");
      s.Bind(1, static_cast<int64_t>(w.kind)).Bind(2, w.target).Bind(3, w.digest.str());
      s.Bind(4, w.tag);
      return s.Step() == SQLITE_DONE ? Status::Ok() : Error("recording backing work");
    });
  }

  Status RemoveBackingWork(const BackingWork& w) override {
    return Call([&]() -> Status {
      Stmt s(this, "DELETE FROM backing_work WHERE kind=? AND target=? AND digest=? AND tag=?");
      s.Bind(1, static_cast<int64_t>(w.kind)).Bind(2, w.target).Bind(3, w.digest.str());
      s.Bind(4, w.tag);
      return s.Step() == SQLITE_DONE ? Status::Ok() : Error("removing backing work");
    });
  }

  Status LoadBackingWork(const std::function<void(const BackingWork&)>& found) override {
    return Call([&]() -> Status {
      // Blobs first, then manifests by digest, then tags: the order they can be pushed in.
      Stmt s(this,
             "SELECT kind, target, digest, tag FROM backing_work ORDER BY kind DESC, tag <> '', "
             "added_at");
      int rc;
      while ((rc = s.Step()) == SQLITE_ROW) {
        auto d = oci::Digest::Parse(s.Text(2));
        int64_t kind = s.Int(0);
        if (!d.ok() || (kind != 1 && kind != 2)) continue;
        found(BackingWork{static_cast<ContentKind>(kind), s.Text(1), *d, s.Text(3)});
      }
      return rc == SQLITE_DONE ? Status::Ok() : Error("reading backing work");
    });
  }

  Result<RetentionResult> ExpireUnused(int64_t before) override {
    return Call([&]() -> Result<RetentionResult> {
      RetentionResult r;
      {
        Stmt s(this, "DELETE FROM tags WHERE accessed_at < ? AND checked_at < ?");
        s.Bind(1, before).Bind(2, before);
        if (s.Step() != SQLITE_DONE) return Error("expiring tags");
        r.tags = sqlite3_changes(db_);
      }
      {
        // Links record what a repository's manifests referenced: once nothing of the
        // repository is tagged any more and the links are old, they only cost space.
        Stmt s(this,
               "DELETE FROM repo_content WHERE linked_at < ? AND NOT EXISTS (SELECT 1 FROM tags "
               "t WHERE t.upstream = repo_content.upstream AND t.repo = repo_content.repo)");
        s.Bind(1, before);
        if (s.Step() != SQLITE_DONE) return Error("expiring links");
        r.links = sqlite3_changes(db_);
      }
      {
        Stmt s(this, "DELETE FROM tag_lists WHERE fetched_at < ?");
        s.Bind(1, before);
        if (s.Step() != SQLITE_DONE) return Error("expiring tag lists");
      }
      return r;
    });
  }

  Status Compact(int pages) override {
    return Call([&]() -> Status {
      return Exec(("PRAGMA incremental_vacuum(" + std::to_string(pages) + ")").c_str());
    });
  }

  Status TouchTagsAccessed(const std::vector<TagAccess>& accesses) override {
    return Call([&]() -> Status {
      RC_RETURN_IF_ERROR(Exec("BEGIN"));
      for (const auto& a : accesses) {
        Stmt s(this,
               "UPDATE tags SET accessed_at=MAX(accessed_at, ?) WHERE upstream=? AND repo=? AND "
               "tag=?");
        s.Bind(1, a.at).Bind(2, a.upstream).Bind(3, a.repo).Bind(4, a.tag);
        if (s.Step() != SQLITE_DONE) return Rollback("updating tag access");
      }
      return Commit();
    });
  }

  Status DeleteTag(const std::string& upstream, const std::string& repo,
                   const std::string& tag) override {
    return Call([&]() -> Status {
      Stmt s(this, "DELETE FROM tags WHERE upstream=? AND repo=? AND tag=?");
      s.Bind(1, upstream).Bind(2, repo).Bind(3, tag);
      return s.Step() == SQLITE_DONE ? Status::Ok() : Error("deleting tag");
    });
  }

  Result<std::optional<TagListRecord>> GetTagList(const std::string& upstream,
                                                  const std::string& repo,
                                                  const std::string& query) override {
    return Call([&]() -> Result<std::optional<TagListRecord>> {
      Stmt s(this,
             "SELECT status, body, content_type, link, fetched_at FROM tag_lists "
             "WHERE upstream=? AND repo=? AND query=?");
      s.Bind(1, upstream).Bind(2, repo).Bind(3, query);
      int rc = s.Step();
      if (rc == SQLITE_DONE) return std::optional<TagListRecord>();
      if (rc != SQLITE_ROW) return Error("reading tag list");
      TagListRecord r;
      r.status = static_cast<long>(s.Int(0));
      r.body = s.Text(1);
      r.content_type = s.Text(2);
      r.link = s.Text(3);
      r.fetched_at = s.Int(4);
      return std::optional<TagListRecord>(std::move(r));
    });
  }

  Status PutTagList(const std::string& upstream, const std::string& repo, const std::string& query,
                    const TagListRecord& r) override {
    const TagListLimits& limits = options_.tag_lists;
    const uint64_t budget = tag_list_budget_.load();
    if (r.body.size() > limits.max_body || r.body.size() > budget) return Status::Ok();
    return Call([&]() -> Status {
      RC_RETURN_IF_ERROR(Exec("BEGIN"));
      {
        Stmt s(this,
               "INSERT OR REPLACE INTO tag_lists (upstream, repo, query, status, size, "
               "content_type, link, fetched_at, body) VALUES (?,?,?,?,?,?,?,?,?)");
        s.Bind(1, upstream).Bind(2, repo).Bind(3, query).Bind(4, static_cast<int64_t>(r.status));
        s.Bind(5, static_cast<int64_t>(r.body.size())).Bind(6, r.content_type).Bind(7, r.link);
        s.Bind(8, r.fetched_at).Bind(9, r.body);
        if (s.Step() != SQLITE_DONE) return Rollback("writing tag list");
      }
      {
        // The repository's newest pages stay (a REPLACE gives the row a new, highest rowid).
        Stmt s(this,
               "DELETE FROM tag_lists WHERE rowid IN (SELECT rowid FROM tag_lists WHERE "
               "upstream=? AND repo=? ORDER BY rowid DESC LIMIT -1 OFFSET ?)");
        s.Bind(1, upstream).Bind(2, repo).Bind(3, static_cast<int64_t>(limits.per_repository));
        if (s.Step() != SQLITE_DONE) return Rollback("bounding tag lists");
      }
      int64_t rows = 0, bytes = 0;
      {
        Stmt s(this, "SELECT count(*), total(size) FROM tag_lists INDEXED BY tag_lists_sizes");
        if (s.Step() != SQLITE_ROW) return Rollback("bounding tag lists");
        rows = s.Int(0);
        bytes = s.Int(1);
      }
      std::vector<int64_t> oldest;
      {
        Stmt s(this, "SELECT rowid, size FROM tag_lists ORDER BY rowid");
        while ((rows > static_cast<int64_t>(limits.rows) || bytes > static_cast<int64_t>(budget)) &&
               s.Step() == SQLITE_ROW) {
          oldest.push_back(s.Int(0));
          --rows;
          bytes -= s.Int(1);
        }
      }
      for (int64_t rowid : oldest) {
        Stmt s(this, "DELETE FROM tag_lists WHERE rowid=?");
        s.Bind(1, rowid);
        if (s.Step() != SQLITE_DONE) return Rollback("bounding tag lists");
      }
      return Commit();
    });
  }

  void SetTagListBudget(uint64_t bytes) override {
    tag_list_budget_ = std::min(bytes, options_.tag_lists.bytes);
  }

  Status TouchTagAccessed(const std::string& upstream, const std::string& repo,
                          const std::string& tag, int64_t now) override {
    return Call([&]() -> Status {
      Stmt s(this, "UPDATE tags SET accessed_at=? WHERE upstream=? AND repo=? AND tag=?");
      s.Bind(1, now).Bind(2, upstream).Bind(3, repo).Bind(4, tag);
      return s.Step() == SQLITE_DONE ? Status::Ok() : Error("updating tag access");
    });
  }

  Result<int64_t> TagAccessedAt(const std::string& upstream, const std::string& repo,
                                const std::string& tag) override {
    return Call([&]() -> Result<int64_t> {
      Stmt s(this, "SELECT accessed_at FROM tags WHERE upstream=? AND repo=? AND tag=?");
      s.Bind(1, upstream).Bind(2, repo).Bind(3, tag);
      int rc = s.Step();
      if (rc == SQLITE_DONE) return int64_t{0};
      if (rc != SQLITE_ROW) return Error("reading tag access");
      return s.Int(0);
    });
  }

  Status PutManifestType(const oci::Digest& d, const std::string& media_type) override {
    return Call([&]() -> Status {
      Stmt s(this, "INSERT OR REPLACE INTO manifest_types VALUES (?,?)");
      s.Bind(1, d.str()).Bind(2, media_type);
      return s.Step() == SQLITE_DONE ? Status::Ok() : Error("writing manifest type");
    });
  }

  Result<std::optional<std::string>> GetManifestType(const oci::Digest& d) override {
    return Call([&]() -> Result<std::optional<std::string>> {
      Stmt s(this, "SELECT media_type FROM manifest_types WHERE digest=?");
      s.Bind(1, d.str());
      int rc = s.Step();
      if (rc == SQLITE_DONE) return std::optional<std::string>();
      if (rc != SQLITE_ROW) return Error("reading manifest type");
      return std::optional<std::string>(s.Text(0));
    });
  }

  Status Link(const std::string& upstream, const std::string& repo, const oci::Digest& d,
              ContentKind kind, uint64_t size) override {
    return Call([&]() -> Status {
      Stmt s(this,
             "INSERT INTO repo_content (upstream, repo, digest, kind, size, linked_at) "
             "VALUES (?,?,?,?,?,?) ON CONFLICT(upstream, repo, digest) DO UPDATE SET "
             "size=CASE WHEN size=0 THEN excluded.size ELSE size END, "
             "linked_at=excluded.linked_at");
      s.Bind(1, upstream).Bind(2, repo).Bind(3, d.str()).Bind(4, static_cast<int64_t>(kind));
      s.Bind(5, static_cast<int64_t>(size)).Bind(6, Now());
      return s.Step() == SQLITE_DONE ? Status::Ok() : Error("linking content");
    });
  }

  Result<std::optional<uint64_t>> Linked(const std::string& upstream, const std::string& repo,
                                         const oci::Digest& d) override {
    return Call([&]() -> Result<std::optional<uint64_t>> {
      Stmt s(this, "SELECT size FROM repo_content WHERE upstream=? AND repo=? AND digest=?");
      s.Bind(1, upstream).Bind(2, repo).Bind(3, d.str());
      int rc = s.Step();
      if (rc == SQLITE_DONE) return std::optional<uint64_t>();
      if (rc != SQLITE_ROW) return Error("reading link");
      return std::optional<uint64_t>(static_cast<uint64_t>(s.Int(0)));
    });
  }

  uint64_t FileBytes() override {
    std::error_code ec;
    auto n = std::filesystem::file_size(path_, ec);
    return ec ? 0 : static_cast<uint64_t>(n);
  }

  Status CheckIntegrity() override {
    const uint64_t replacements = replacements_.load();
    std::string problem;
    Status failed;
    {
      sqlite3* check = nullptr;
      int rc = sqlite3_open_v2(path_.c_str(), &check, SQLITE_OPEN_READWRITE, nullptr);
      sqlite3_stmt* stmt = nullptr;
      if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(check, 5000);
        rc = sqlite3_prepare_v2(check, "PRAGMA quick_check", -1, &stmt, nullptr);
      }
      while (rc == SQLITE_OK || rc == SQLITE_ROW) {
        rc = sqlite3_step(stmt);
        if (rc != SQLITE_ROW) break;
        auto text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
        std::string line = text ? text : "";
        if (line != "ok" && problem.empty()) problem = line;
      }
      if (rc != SQLITE_DONE) {
        std::string msg = check ? sqlite3_errmsg(check) : "out of memory";
        if (IsCorruptCode(rc)) {
          if (problem.empty()) problem = msg;
        } else {
          failed = IoError("checking the metadata database: " + msg);
        }
      }
      sqlite3_finalize(stmt);
      sqlite3_close_v2(check);
    }
    if (!failed.ok() || problem.empty()) return failed;
    std::replace(problem.begin(), problem.end(), '\n', ' ');  // one line in the log and /readyz
    return Call([&]() -> Status {
      // Unless it was replaced meanwhile (then the file checked is gone already).
      if (replacements_.load() == replacements && db_) corrupt_ = "quick_check: " + problem;
      return Status::Ok();
    });
  }

  uint64_t Replacements() override { return replacements_.load(); }

  std::string Degraded() override {
    std::lock_guard<std::mutex> lock(health_mu_);
    if (!unavailable_.empty()) return unavailable_;
    if (replaced_at_ == 0) return "";
    const int64_t ago = SteadySeconds() - replaced_at_;
    if (ago >= kReportReplacementSeconds) return "";
    return replaced_ + " " + std::to_string(ago) + " s ago";
  }

 private:
  // A cached prepared statement, reset for reuse when this handle goes away. Used under mu_.
  class Stmt {
   public:
    Stmt(SqliteMetadataStore* store, const char* sql) {
      if (!store->db_) return;  // unavailable: Step fails, Error says why
      auto& cached = store->prepared_[sql];
      if (!cached) {
        sqlite3_prepare_v3(store->db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &cached, nullptr);
      }
      stmt_ = cached;
    }
    ~Stmt() {
      if (stmt_) {
        sqlite3_reset(stmt_);
        sqlite3_clear_bindings(stmt_);
      }
    }
    Stmt(const Stmt&) = delete;
    Stmt& operator=(const Stmt&) = delete;
    Stmt& Bind(int i, const std::string& v) {
      sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
      return *this;
    }
    Stmt& Bind(int i, int64_t v) {
      sqlite3_bind_int64(stmt_, i, v);
      return *this;
    }
    int Step() { return stmt_ ? sqlite3_step(stmt_) : SQLITE_ERROR; }
    std::string Text(int col) {
      auto p = sqlite3_column_text(stmt_, col);
      if (!p) return "";
      return std::string(reinterpret_cast<const char*>(p),
                         static_cast<size_t>(sqlite3_column_bytes(stmt_, col)));
    }
    int64_t Int(int col) { return sqlite3_column_int64(stmt_, col); }

   private:
    sqlite3_stmt* stmt_ = nullptr;
  };

  // Runs one call under the lock. A corruption it saw replaces the database when the call's
  // statements are finished (they belong to the old connection); then it runs once more.
  template <typename F>
  auto Call(F&& body) -> decltype(body()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!db_) RetryOpen();
      auto r = body();
      if (corrupt_.empty()) return r;
      Replace();
    }
    std::lock_guard<std::mutex> lock(mu_);
    return body();
  }

  // Opens (creating if missing) and migrates the file at path_. Under mu_ (or before sharing).
  Status OpenFile() {
    if (sqlite3_open_v2(path_.c_str(), &db_,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        nullptr) != SQLITE_OK) {
      Status s = IoError("cannot open metadata database " + path_ + ": " +
                         (db_ ? sqlite3_errmsg(db_) : "out of memory"));
      CloseDb();
      return s;
    }
    sqlite3_busy_timeout(db_, 5000);
    Status s = Exec("PRAGMA journal_mode=WAL");
    if (s.ok()) s = Exec("PRAGMA synchronous=NORMAL");
    if (s.ok()) {
      s = Exec(("PRAGMA journal_size_limit=" + std::to_string(kJournalSizeLimit)).c_str());
    }
    if (s.ok()) s = Migrate();
    if (!s.ok() && corrupt_.empty()) CloseDb();
    return s;
  }

  void CloseDb() {
    for (auto& [sql, stmt] : prepared_) sqlite3_finalize(stmt);
    prepared_.clear();
    if (db_) sqlite3_close_v2(db_);
    db_ = nullptr;
  }

  // Brings a store of any earlier version forward, one step per version, each in a transaction.
  // Version 0 is a fresh file or a store from before versioning (regcache 0.1: tags,
  // manifest_types, repo_content).
  Status Migrate() {
    int64_t version = 0;
    {
      Stmt s(this, "PRAGMA user_version");
      int rc = s.Step();
      if (rc == SQLITE_ROW) {
        version = s.Int(0);
      } else if (rc != SQLITE_DONE) {
        return Error("reading the schema version");
      }
    }
    if (version > kSchemaVersion) {
      return IoError("metadata database has schema version " + std::to_string(version) +
                     ", newer than this regcache understands (" + std::to_string(kSchemaVersion) +
                     ")");
    }
    if (version < 2) {
      // Freed pages go back to the file system a little at a time (see Compact). Switching
      // an existing file needs one VACUUM; a new file only needs the pragma before any table.
      int64_t auto_vacuum = 0;
      {
        Stmt s(this, "PRAGMA auto_vacuum");
        if (s.Step() == SQLITE_ROW) auto_vacuum = s.Int(0);
      }
      if (auto_vacuum != 2) {
        RC_RETURN_IF_ERROR(Exec("PRAGMA auto_vacuum=INCREMENTAL"));
        RC_RETURN_IF_ERROR(Exec("VACUUM"));
      }
    }
    if (version < 1) RC_RETURN_IF_ERROR(Step(kSchema, 1));
    if (version < 2) RC_RETURN_IF_ERROR(Step(kSchemaV2, 2));
    if (version < 3) RC_RETURN_IF_ERROR(Step(kSchemaV3, 3));
    if (version < 4) {
      RC_RETURN_IF_ERROR(Step(kSchemaV4, 4));
      // What the dropped table held goes back to the file system now, not 1000 pages an hour.
      RC_RETURN_IF_ERROR(Exec("PRAGMA incremental_vacuum"));
    }
    return Status::Ok();
  }

  Status Step(const char* sql, int to) {
    RC_RETURN_IF_ERROR(Exec("BEGIN"));
    Status s = Exec(sql);
    if (s.ok()) s = Exec(("PRAGMA user_version=" + std::to_string(to)).c_str());
    if (!s.ok()) {
      (void)Exec("ROLLBACK");
      return s.WithContext("migrating the metadata database to version " + std::to_string(to));
    }
    return Exec("COMMIT");
  }

  // The database is corrupt (corrupt_ says how it was seen): moves it aside and opens a fresh
  // one. Under mu_, with no statement of the old connection in use.
  void Replace() {
    const std::string why = std::exchange(corrupt_, "");
    CloseDb();
    std::string aside;
    Status s = MoveAside(&aside);
    if (s.ok()) s = OpenFile();
    if (!s.ok()) {
      corrupt_.clear();
      CloseDb();
      next_open_ = SteadySeconds() + kRetryOpenSeconds;
      std::lock_guard<std::mutex> lock(health_mu_);
      unavailable_ = "the metadata database is corrupt (" + why +
                     ") and no new one could be put in its place: " + s.message();
      spdlog::error("{}; every lookup that needs it fails until it can be (retried every {} s)",
                    unavailable_, kRetryOpenSeconds);
      return;
    }
    ++replacements_;
    {
      std::lock_guard<std::mutex> lock(health_mu_);
      unavailable_.clear();
      replaced_at_ = SteadySeconds();
      replaced_ = "the metadata database was corrupt (" + why + "); moved to " + aside +
                  " and replaced by a new one";
    }
    spdlog::error(
        "metadata database {} is corrupt ({}): moved to {} and replaced by a new, empty one. "
        "Lost with it: tags, repository links and cached tag lists (fetched again from the "
        "upstreams on use), blob usage and manifest types (rebuilt from the stored blobs in the "
        "background), and the backing registry's recorded copy queue (copies queued in memory "
        "still run; a restart before they finish loses them)",
        path_, why, aside);
  }

  // After a failed replacement: tries again, at most every kRetryOpenSeconds.
  void RetryOpen() {
    if (SteadySeconds() < next_open_) return;
    next_open_ = SteadySeconds() + kRetryOpenSeconds;
    Status s = OpenFile();
    if (!corrupt_.empty()) {
      Replace();  // still the corrupt file (moving it failed before)
      return;
    }
    std::lock_guard<std::mutex> lock(health_mu_);
    if (s.ok()) {
      // Most likely a new, empty file: rebuilt like any replacement.
      ++replacements_;
      unavailable_.clear();
      replaced_at_ = SteadySeconds();
      replaced_ = "the metadata database could not be opened for a while; opened again";
      spdlog::info("metadata database {} is open again", path_);
    } else {
      unavailable_ = "the metadata database cannot be opened: " + s.message();
    }
  }

  // <path>.corrupt-<stamp> (and its WAL, kept with it for inspection); the oldest copies beyond
  // options_.keep_corrupt are removed.
  Status MoveAside(std::string* aside) {
    namespace fs = std::filesystem;
    *aside = path_ + ".corrupt-" + UtcStamp();
    std::error_code ec;
    fs::rename(path_, *aside, ec);
    if (ec && ec != std::errc::no_such_file_or_directory) {
      return IoError("cannot move " + path_ + " aside: " + ec.message());
    }
    fs::rename(path_ + "-wal", *aside + "-wal", ec);
    fs::remove(path_ + "-shm", ec);
    const fs::path p(path_);
    const std::string prefix = p.filename().string() + ".corrupt-";
    std::vector<std::string> copies;
    for (const auto& entry :
         fs::directory_iterator(p.parent_path().empty() ? "." : p.parent_path(), ec)) {
      std::string name = entry.path().filename().string();
      if (name.rfind(prefix, 0) == 0 && !(name.size() > 4 && name.ends_with("-wal"))) {
        copies.push_back(entry.path().string());
      }
    }
    std::sort(copies.begin(), copies.end());
    const size_t keep = static_cast<size_t>(std::max(options_.keep_corrupt, 1));
    for (size_t i = 0; i + keep < copies.size(); ++i) {
      fs::remove(copies[i], ec);
      fs::remove(copies[i] + "-wal", ec);
    }
    return Status::Ok();
  }

  Status Exec(const char* sql) {
    if (!db_) return Unavailable();
    char* err = nullptr;
    int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
      std::string m = err ? err : sqlite3_errstr(rc);
      sqlite3_free(err);
      return Failure(rc, sql, m);
    }
    return Status::Ok();
  }

  Status Commit() {
    Status s = Exec("COMMIT");
    if (!s.ok()) (void)Exec("ROLLBACK");
    return s;
  }

  Status Rollback(const char* what) {
    Status e = Error(what);
    (void)Exec("ROLLBACK");
    return e;
  }

  static int64_t Now() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }

  Status Error(const std::string& what) {
    if (!db_) return Unavailable();
    return Failure(sqlite3_errcode(db_), what, sqlite3_errmsg(db_));
  }

  // A failed statement; a corruption is noted for Call to act on once the call is done.
  Status Failure(int rc, const std::string& what, const std::string& message) {
    if (IsCorruptCode(rc)) {
      if (corrupt_.empty()) corrupt_ = what + ": " + message;
      return IoError(std::string(kCorruptPrefix) + " (" + what + ": " + message + ")");
    }
    return IoError("metadata database " + what + ": " + message);
  }

  Status Unavailable() {
    std::lock_guard<std::mutex> lock(health_mu_);
    return IoError(unavailable_.empty() ? std::string("metadata database unavailable")
                                        : unavailable_);
  }

  const std::string path_;
  const MetadataOptions options_;
  std::atomic<uint64_t> tag_list_budget_;
  sqlite3* db_ = nullptr;
  std::mutex mu_;
  // Prepared once per SQL text and reused: preparing costs more than running these statements.
  std::map<const char*, sqlite3_stmt*> prepared_;
  std::string corrupt_;    // under mu_: set by a failing call, acted on when it ends
  int64_t next_open_ = 0;  // under mu_: steady seconds
  std::atomic<uint64_t> replacements_{0};
  // What Degraded() reports; its own lock, so /readyz never waits behind a long statement.
  std::mutex health_mu_;
  std::string unavailable_;
  std::string replaced_;
  int64_t replaced_at_ = 0;  // steady seconds
};

}  // namespace

Result<std::unique_ptr<MetadataStore>> OpenSqliteMetadataStore(const std::string& path,
                                                               MetadataOptions options) {
  auto store = std::make_unique<SqliteMetadataStore>(path, options);
  RC_RETURN_IF_ERROR(store->Open());
  return std::unique_ptr<MetadataStore>(std::move(store));
}

bool IsCorruption(const Status& s) {
  return !s.ok() && s.message().find(kCorruptPrefix) != std::string::npos;
}

}  // namespace regcache::metadata
