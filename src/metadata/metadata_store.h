// Cache metadata: which tag points where and when it was last checked, what media type each
// stored manifest has, and which repository (per upstream) is known to contain which content.
// The last one is the access rule: a blob is served by digest only through a repository that
// references it, or after upstream confirmed that repository has it.
//
// Everything here can be rebuilt, so a damaged database is replaced rather than repaired: when
// SQLite reports corruption (SQLITE_CORRUPT or SQLITE_NOTADB, from any statement, at open, or
// from CheckIntegrity), the file is moved aside as <path>.corrupt-<UTC time> (the newest few
// kept), and the call that saw it runs once more, on a fresh, empty database, as do all after.
// Blob usage and manifest types are rebuilt from the blob files by their owner (the evictor,
// watching Replacements()); tags, links and tag lists are fetched again from upstreams on use;
// the backing registry's recorded queue is lost.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "oci/digest.h"

namespace regcache::metadata {

struct TagRecord {
  oci::Digest digest;
  std::string media_type;
  uint64_t size = 0;
  int64_t fetched_at = 0;  // unix seconds: manifest bytes fetched
  int64_t checked_at = 0;  // unix seconds: last time upstream confirmed (GET or HEAD)
};

enum class ContentKind { kManifest = 1, kBlob = 2 };

// One page of an upstream's tag list as last fetched (status, body and Link header as received).
struct TagListRecord {
  long status = 0;
  std::string body;
  std::string content_type;
  std::string link;
  int64_t fetched_at = 0;  // unix seconds
};

// What the cache knows about a stored blob for eviction (persisted in batches).
struct BlobUsage {
  oci::Digest digest;
  uint64_t size = 0;
  bool manifest = false;
  int64_t last_access = 0;  // unix seconds
  uint32_t hits = 0;
};

struct RetentionResult {
  int64_t tags = 0;
  int64_t links = 0;
};

struct TagAccess {
  std::string upstream, repo, tag;
  int64_t at = 0;  // unix seconds
};

// Content waiting to be copied to the backing registry (serve's shared second tier): a blob, or
// a manifest by digest (`tag` empty) or under a tag, into repository `target` there.
struct BackingWork {
  ContentKind kind = ContentKind::kBlob;
  std::string target;
  oci::Digest digest;
  std::string tag;
};

class MetadataStore {
 public:
  virtual ~MetadataStore() = default;

  virtual Result<std::optional<TagRecord>> GetTag(const std::string& upstream,
                                                  const std::string& repo,
                                                  const std::string& tag) = 0;
  virtual Status PutTag(const std::string& upstream, const std::string& repo,
                        const std::string& tag, const TagRecord& record) = 0;
  // Records that a client was served the tag at `now` (for eviction by last access).
  virtual Status TouchTagAccessed(const std::string& upstream, const std::string& repo,
                                  const std::string& tag, int64_t now) = 0;
  // The same for many tags in one transaction (accesses are batched in memory, then flushed).
  virtual Status TouchTagsAccessed(const std::vector<TagAccess>& accesses) = 0;
  // Forgets a tag (upstream says it no longer exists). Absent tags are not an error.
  virtual Status DeleteTag(const std::string& upstream, const std::string& repo,
                           const std::string& tag) = 0;
  // Last access time of a tag (0 if unknown).
  virtual Result<int64_t> TagAccessedAt(const std::string& upstream, const std::string& repo,
                                        const std::string& tag) = 0;
  // Records that upstream re-confirmed the tag at `now` (same digest).
  virtual Status TouchTagChecked(const std::string& upstream, const std::string& repo,
                                 const std::string& tag, int64_t now) = 0;

  virtual Status PutManifestType(const oci::Digest& digest, const std::string& media_type) = 0;
  virtual Result<std::optional<std::string>> GetManifestType(const oci::Digest& digest) = 0;

  // Links content to a repository; `size` is the descriptor's size (0 if unknown). The first
  // known size of a link is kept: a later, different claim (e.g. a HEAD without Content-Length,
  // or a lying one) never overwrites it.
  virtual Status Link(const std::string& upstream, const std::string& repo,
                      const oci::Digest& digest, ContentKind kind, uint64_t size) = 0;
  // The linked size if the repository is known to contain the digest.
  virtual Result<std::optional<uint64_t>> Linked(const std::string& upstream,
                                                 const std::string& repo,
                                                 const oci::Digest& digest) = 0;

  // Blob usage, as last saved: every row once, for start-up.
  virtual Status LoadBlobUsage(const std::function<void(const BlobUsage&)>& found) = 0;
  // Saves usage rows and forgets removed blobs, in one transaction.
  virtual Status SaveBlobUsage(const std::vector<BlobUsage>& upserts,
                               const std::vector<oci::Digest>& removed) = 0;
  // Retention: removes tags neither accessed nor checked since `before` (unix seconds), links of
  // repositories left with no tag that were not written since then, and old tag lists.
  virtual Result<RetentionResult> ExpireUnused(int64_t before) = 0;
  // Returns up to `pages` free pages of the database file to the file system.
  virtual Status Compact(int pages) = 0;

  // The backing registry's write-through queue, kept so that a restart resumes it. Adding work
  // already recorded is not an error; removing absent work neither.
  virtual Status AddBackingWork(const BackingWork& work) = 0;
  virtual Status RemoveBackingWork(const BackingWork& work) = 0;
  virtual Status LoadBackingWork(const std::function<void(const BackingWork&)>& found) = 0;

  // Cached tag-list pages, by upstream, repository and normalized query ("" or "?n=10&last=x").
  // Bounded (TagListLimits): a body larger than max_body or than the byte budget is not stored
  // (Ok: the caller relays it); storing one evicts the oldest pages beyond the per-repository
  // and total row caps and the byte budget, in the same transaction.
  virtual Result<std::optional<TagListRecord>> GetTagList(const std::string& upstream,
                                                          const std::string& repo,
                                                          const std::string& query) = 0;
  virtual Status PutTagList(const std::string& upstream, const std::string& repo,
                            const std::string& query, const TagListRecord& record) = 0;
  // The total bytes of stored tag-list bodies (lowered to a share of the store's cap by the
  // evictor); pages beyond it go, oldest first, at the next PutTagList.
  virtual void SetTagListBudget(uint64_t bytes) = 0;

  // ---- health ----
  // Size of the database file on disk (its WAL is bounded separately: journal_size_limit).
  virtual uint64_t FileBytes() = 0;
  // PRAGMA quick_check (linear in the file's size; integrity_check costs about 7x more) on a
  // connection of its own, so other calls are not held up while it reads the whole file. On
  // corruption the database is replaced. Ok if sound or replaced; an error if it could not run.
  virtual Status CheckIntegrity() = 0;
  // How many times this process replaced a corrupt database (at open included).
  virtual uint64_t Replacements() = 0;
  // Empty when sound; otherwise why not, for /readyz: for a minute after a replacement, and for
  // as long as no fresh database can be opened (then every call fails, and opening is retried).
  virtual std::string Degraded() = 0;
};

struct TagListLimits {
  uint64_t max_body = 1u << 20;  // a larger list is relayed, not stored
  size_t per_repository = 64;    // pages of one (upstream, repository)
  size_t rows = 4096;            // pages in total
  uint64_t bytes = 64u << 20;    // bodies in total (SetTagListBudget changes it)
};

struct MetadataOptions {
  TagListLimits tag_lists;
  int keep_corrupt = 3;  // moved-aside corrupt databases kept (the oldest beyond are removed)
};

// SQLite in WAL mode at `path` (created if missing; replaced if corrupt, see above). Safe to use
// from many threads.
Result<std::unique_ptr<MetadataStore>> OpenSqliteMetadataStore(const std::string& path,
                                                               MetadataOptions options = {});

// Whether a failure from the store was the database being corrupt (it has been replaced since).
bool IsCorruption(const Status& s);

}  // namespace regcache::metadata
