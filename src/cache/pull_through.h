// The pull-through cache: manifests and blobs for (upstream, repository) requests, answered from
// the local stores when possible and fetched from upstream at most once per digest otherwise.
//
// Calls come in three kinds, so that local work never waits on upstream work:
//   - Lookup*: local only. With memory_only they touch nothing but the in-memory hot index and
//     stat(2)/open(2) of committed blobs (the server calls them on its event loop); otherwise
//     also SQLite and blob files (a local worker). They never contact an upstream.
//   - Revalidate / StartFill: start upstream work in the background on the upstream's own
//     threads and return at once.
//   - Fetch* / Confirm* / Tags / Referrers: block on upstream I/O; run them on the upstream's
//     request queue (Upstream::requests()), never on an event loop or a local worker.
// Every upstream call goes through the upstream's circuit breaker; a 404 from upstream is
// remembered for negative_ttl.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "cache/backing.h"
#include "cache/evictor.h"
#include "cache/fill.h"
#include "cache/flight.h"
#include "cache/hot_index.h"
#include "cache/ledger.h"
#include "cache/metrics.h"
#include "cache/upstream_set.h"
#include "metadata/metadata_store.h"
#include "storage/blob_store.h"

namespace regcache::cache {

struct CacheOptions {
  std::chrono::seconds negative_ttl{30};  // how long an upstream 404 is remembered
  // After a failed revalidation of a tag, the next one waits this long (doubling up to max).
  std::chrono::seconds revalidate_backoff{5};
  std::chrono::seconds max_revalidate_backoff{60};
  HotIndexLimits hot;
};

struct ManifestResponse {
  std::shared_ptr<const CachedManifest> manifest;  // exact bytes and media type
  oci::Digest digest;
  std::string result;   // hit, miss, revalidated, stale, coalesced
  std::string warning;  // set when served stale
};

enum class LookupState {
  kHit,        // answer from cache (manifests: fresh tag or digest; blobs: committed)
  kStale,      // a tag past its TTL, cached: revalidate, or serve with a warning
  kCold,       // not cached (blobs: the repository is known to have it)
  kUnlinked,   // blobs: the repository is not known to have it; only upstream can say
  kNeedStore,  // memory_only lookup could not decide: look again with memory_only = false
};

struct ManifestLookup {
  LookupState state = LookupState::kCold;
  ManifestResponse response;  // kHit, kStale
};

struct BlobLookup {
  LookupState state = LookupState::kCold;
  uint64_t size = 0;  // kHit: the committed size; kCold: the repository's descriptor (0: unknown)
  int fd = -1;        // kHit for GET: a descriptor of the committed blob (the caller closes it)
};

struct BlobStart {
  std::shared_ptr<Fill> fill;  // a fill to follow, or
  int fd = -1;                 // the blob committed meanwhile (the caller closes it)
  uint64_t size = 0;           // with fd
  bool joined = false;         // followed a fill someone else started
};

struct RawResponse {
  long status = 0;
  std::string body;
  std::string content_type;
  std::string link;
  std::string filters_applied;  // referrers: OCI-Filters-Applied
  std::string result;           // hit, miss, stale, pass
  std::string warning;
};

// A blob download in progress, as the status page lists it.
struct FillProgress {
  std::string upstream;
  std::string repository;  // the one the download goes through
  oci::Digest digest;
  uint64_t bytes = 0;    // received so far (what clients may read)
  uint64_t size = 0;     // 0 until the upstream answered
  bool relayed = false;  // not being stored (no room): relayed to its clients from memory
};

class PullThroughCache {
 public:
  PullThroughCache(storage::BlobStore& blobs, metadata::MetadataStore& meta, Metrics& metrics,
                   CacheOptions options = {});

  // Bounded storage: commits and hits are reported to `ledger`; a fill that `evictor` cannot make
  // room for is served without being stored. Without them the store grows without bound.
  void AttachStorage(BlobLedger* ledger, Evictor* evictor) {
    ledger_ = ledger;
    evictor_ = evictor;
  }
  // The shared second tier: read before the upstream (content by digest costs no upstream
  // request; a tag falls back to it while the upstream fails), and fed in the background with
  // what this node fetched from upstreams. Without it, only the local store and upstreams.
  void AttachBacking(Backing* backing) { backing_ = backing; }

  // Empty when storage is healthy; otherwise why not (for /readyz).
  std::string StorageDegraded() { return evictor_ ? evictor_->Degraded() : std::string(); }
  // The same for the metadata database (replaced after corruption, or unavailable).
  std::string MetadataDegraded() { return meta_.Degraded(); }

  // Local answer for GET/HEAD of a manifest by tag or digest. Errors only for local failures.
  Result<ManifestLookup> LookupManifest(Upstream& up, const std::string& repo,
                                        const std::string& reference, bool memory_only);

  // Starts the background revalidation of a stale tag (one HEAD; a GET by digest if it moved),
  // or joins the one running. nullptr when no check should run now: the breaker is open, the
  // tag's last check failed less than a back-off ago, or the upstream is saturated. `*started`
  // says whether this call started it. When the flight completes, a new lookup sees the result.
  std::shared_ptr<Flight> Revalidate(Upstream& up, const std::string& repo, const std::string& tag,
                                     bool* started);

  // Blocking: a manifest that LookupManifest found cold (or that vanished), from upstream. One
  // upstream conversation per (upstream, repository, reference) at a time; concurrent callers
  // share its result. kNotFound (remembered for negative_ttl), or the upstream's failure.
  Result<ManifestResponse> FetchManifest(Upstream& up, const std::string& repo,
                                         const std::string& reference);

  // Local answer for GET/HEAD of a blob. A blob is served only through a repository known to
  // reference it (kUnlinked otherwise).
  Result<BlobLookup> LookupBlob(Upstream& up, const std::string& repo, const oci::Digest& digest,
                                bool head, bool memory_only);

  // Blocking: asks upstream (HEAD) whether the repository has the blob; links it if so and
  // returns upstream's size (0 if upstream sent none). kNotFound is remembered.
  Result<uint64_t> ConfirmBlob(Upstream& up, const std::string& repo, const oci::Digest& digest);

  // Non-blocking: joins the download of a blob in progress, or starts one on the upstream's fill
  // queue (or finds the blob committed meanwhile). kUnavailable/kRateLimited at once when the
  // breaker is open or the fill queue is full.
  Result<BlobStart> StartFill(Upstream& up, const std::string& repo, const oci::Digest& digest);

  // Opens a committed blob (after a fill completed). kNotFound if it is not stored.
  Result<int> OpenCommitted(const oci::Digest& digest);

  // Blocking. Tag lists are cached per repository and normalized query (http::TagListQuery:
  // only `n` and `last`, which is also all the upstream is sent) for the tag TTL, and served
  // stale while upstream fails; concurrent misses of one page share one upstream request. A
  // page too big for the metadata store's bounds is relayed, not stored. Referrers pass through
  // with upstream's status (404 included).
  Result<RawResponse> Tags(Upstream& up, const std::string& repo, const std::string& query);
  Result<RawResponse> Referrers(Upstream& up, const std::string& repo, const oci::Digest& digest,
                                const std::string& query);

  // The blob downloads in progress (at most `max` of them), for the status page. Read-only.
  std::vector<FillProgress> InFlightFills(size_t max);

  // Writes the tag accesses recorded since the last flush to the metadata store in one
  // transaction (hits record them in memory only).
  void FlushAccess();

 private:
  struct NegativeEntry {
    int64_t expires_at = 0;
  };
  struct Backoff {
    std::chrono::steady_clock::time_point next;
    std::chrono::seconds period{0};
  };

  Result<std::shared_ptr<const CachedManifest>> LoadManifest(const oci::Digest& digest);
  // `from_backing`: read from the backing registry, so not copied back there.
  Result<std::shared_ptr<const CachedManifest>> StoreManifest(Upstream& up, const std::string& repo,
                                                              const upstream::FetchedManifest& m,
                                                              bool from_backing = false);
  // With a backing registry: a cold tag resolved by an upstream HEAD, its manifest from the local
  // store, the backing registry or (last) the upstream; the backing's tag when upstream fails.
  Result<ManifestResponse> FetchTagWithBacking(Upstream& up, const std::string& repo,
                                               const std::string& tag);
  // A manifest by digest for `repo`: from the backing registry if it has it there, else a GET
  // from the upstream.
  Result<upstream::FetchedManifest> GetManifestByDigest(Upstream& up, const std::string& repo,
                                                        const oci::Digest& digest,
                                                        bool* from_backing);
  std::string BackingRepository(Upstream& up, const std::string& repo) {
    return backing_->Repository(up.registry(), repo);
  }
  Result<ManifestResponse> FetchManifestOnce(Upstream& up, const std::string& repo,
                                             const std::string& reference);
  // The part of Tags after a miss, under tag_list_fetches_.
  Result<RawResponse> FetchTagList(Upstream& up, const std::string& repo, const std::string& query);
  Status RevalidateNow(Upstream& up, const std::string& repo, const std::string& tag);
  // Records the tag in memory and (best effort) in the metadata store, and queues it for the
  // backing registry unless `to_backing` is false (it came from there).
  Status PutTag(Upstream& up, const std::string& repo, const std::string& tag,
                const metadata::TagRecord& record, bool to_backing = true);
  // A durable write failed (disk full, database error): logged, storage reported degraded; the
  // caller goes on serving from memory.
  void NoteDurableFailure(const Status& s, const std::string& what);
  void RunFill(Upstream& up, std::shared_ptr<Fill> fill, std::string key,
               std::unique_ptr<storage::BlobWriter> writer);
  // `key` is HotIndex::Key(upstream, repo, tag), which the caller has built already.
  void NoteAccess(const std::string& key, const std::string& upstream, const std::string& repo,
                  const std::string& tag);
  bool IsKnownMissing(const std::string& key);
  void RememberMissing(const std::string& key);

  storage::BlobStore& blobs_;
  metadata::MetadataStore& meta_;
  Metrics& metrics_;
  const CacheOptions options_;
  HotIndex hot_;
  BlobLedger* ledger_ = nullptr;
  Evictor* evictor_ = nullptr;
  Backing* backing_ = nullptr;
  SingleFlight<Result<ManifestResponse>> manifest_fetches_;
  SingleFlight<Result<RawResponse>> tag_list_fetches_;

  std::mutex fills_mu_;
  std::map<std::string, std::shared_ptr<Fill>> fills_;  // by upstream|digest

  std::mutex revalidations_mu_;
  std::unordered_map<std::string, std::shared_ptr<Flight>> revalidations_;
  std::unordered_map<std::string, Backoff> revalidation_backoff_;

  std::mutex negative_mu_;
  std::unordered_map<std::string, NegativeEntry> negative_;

  std::mutex access_mu_;
  std::unordered_map<std::string, metadata::TagAccess> accessed_;
};

int64_t NowSeconds();

}  // namespace regcache::cache
