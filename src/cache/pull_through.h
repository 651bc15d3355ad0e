// The pull-through cache: manifests and blobs for (upstream, repository) requests, answered from
// the local stores when possible and fetched from upstream at most once per digest otherwise.
// Every method here may block on upstream I/O: call it from a worker thread, never from an
// event loop.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "base/status.h"
#include "cache/fill.h"
#include "cache/metrics.h"
#include "cache/upstream_set.h"
#include "metadata/metadata_store.h"
#include "storage/blob_store.h"

namespace regcache::cache {

// Runs blocking work (fills) somewhere other than the caller's thread.
using TaskRunner = std::function<void(std::function<void()>)>;

struct ManifestResponse {
  std::string bytes;  // empty for HEAD
  std::string media_type;
  oci::Digest digest;
  uint64_t size = 0;
  std::string result;   // hit, miss, revalidated, stale, coalesced
  std::string warning;  // set when served stale
};

struct BlobResponse {
  uint64_t size = 0;
  int fd = -1;                 // committed blob (caller closes), or
  std::shared_ptr<Fill> fill;  // a fill in progress (or just finished)
  std::string result;          // hit, miss, coalesced
};

struct RawResponse {
  long status = 0;
  std::string body;
  std::string content_type;
  std::string link;
};

class PullThroughCache {
 public:
  PullThroughCache(storage::BlobStore& blobs, metadata::MetadataStore& meta, Metrics& metrics,
                   TaskRunner run_fill);

  // GET/HEAD a manifest by tag or digest. Fresh tags and digests are served with no upstream
  // request; stale tags are revalidated with a HEAD; upstream failures on revalidation serve the
  // cached copy with a warning. Errors: kNotFound, and upstream's own status on a cold miss
  // (kRateLimited carries Retry-After; see upstream::RetryAfterSeconds).
  Result<ManifestResponse> GetManifest(Upstream& up, const std::string& repo,
                                       const std::string& reference, bool head);

  // Opens a blob for reading (GET) or just sizes it (HEAD: fd and fill stay empty). A blob is
  // served only through a repository known to have it; a cold GET joins or starts the one fill.
  Result<BlobResponse> OpenBlob(Upstream& up, const std::string& repo, const oci::Digest& digest,
                                bool head);

  // Pass-through endpoints (not cached).
  Result<RawResponse> Tags(Upstream& up, const std::string& repo, const std::string& query);
  Result<RawResponse> Referrers(Upstream& up, const std::string& repo, const oci::Digest& digest,
                                const std::string& query);

 private:
  Result<ManifestResponse> ServeStored(const oci::Digest& digest, bool head);
  Status StoreManifest(Upstream& up, const std::string& repo, const upstream::FetchedManifest& m,
                       std::string* media_type);
  std::shared_ptr<std::mutex> KeyLock(const std::string& key);
  void NoteAccess(const std::string& upstream, const std::string& repo, const std::string& tag);
  void RunFill(Upstream& up, std::string repo, std::shared_ptr<Fill> fill,
               std::unique_ptr<storage::BlobWriter> writer);

  storage::BlobStore& blobs_;
  metadata::MetadataStore& meta_;
  Metrics& metrics_;
  TaskRunner run_fill_;

  std::mutex fills_mu_;
  std::map<std::string, std::shared_ptr<Fill>> fills_;  // by digest
  std::mutex keys_mu_;
  std::map<std::string, std::weak_ptr<std::mutex>> key_locks_;
  // Last access written per tag key: hits update SQLite at most once a minute per tag.
  std::mutex access_mu_;
  std::map<std::string, int64_t> access_written_;
};

int64_t NowSeconds();

}  // namespace regcache::cache
