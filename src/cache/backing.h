// The shared second tier of `regcache serve`: a registry the team already runs (ECR, Harbor,
// GHCR, distribution on S3) holding what the fleet has pulled, as
// <prefix>/<registry>/<repository> (oci/mirror.h), byte-exact, so that it is also an ordinary
// mirror anyone can pull from, and the layout `regcache ensure --mirror` writes.
//
// Read side: called by the pull-through cache on upstream worker threads, with serve's short
// deadlines and a breaker of its own. kNotFound means "not there, ask the upstream"; any other
// failure means the same to the caller, which never fails a request because the backing did.
// A blob that fails verification when read from it (digest or size: kIntegrity, Origin::kBacking)
// is *distrusted*: counted against the backing registry (its breaker, and
// regcache_backing_requests_total{result="corrupt"}), and fills of that digest skip the backing
// registry until a verified copy was written back, so that one bad object in the bucket behind
// it never makes a layer unpullable. The write-back (Put after the upstream fill) reads the
// backing's copy once to confirm it is bad, deletes it and uploads the verified one, then reads
// it again; a registry that refuses the delete, or keeps its old data (distribution does: it
// never overwrites content-addressed data, and a blob DELETE only unlinks it) is logged with
// what the operator must do, and the digest stays distrusted.
//
// Write side: content committed to the local store is queued (in the metadata store too, so a
// restart resumes the queue) and copied by background threads, never on a request path, one
// copy per blob or manifest however many times it is queued. Blobs go first (a cross-repository
// mount when the backing registry is known to have the blob in another repository, else a
// streamed upload from the committed local file); a manifest goes once everything it
// references is there; a tag goes last. An index whose children are not all cached here waits
// for them (they are never fetched just for the backing registry: each would cost a counted
// manifest GET upstream, and its platform's blobs), and is given up after `max_attempts`.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "base/status.h"
#include "cache/breaker.h"
#include "cache/metrics.h"
#include "metadata/metadata_store.h"
#include "storage/blob_store.h"
#include "upstream/registry_client.h"

namespace regcache::cache {

struct BackingOptions {
  std::string prefix;         // repository prefix in the backing registry ("cache"), may be empty
  int threads = 2;            // concurrent copies
  size_t max_queue = 100000;  // queued items in memory; more are refused (counted, logged)
  std::chrono::milliseconds retry_min{2000};
  std::chrono::milliseconds retry_max{300000};
  int max_attempts = 20;  // tries before an item is given up (about an hour with the defaults)
  BreakerOptions breaker;
};

class Backing {
 public:
  // `reader` has serve's short deadlines; `writer` is patient (uploads take as long as they
  // take). Both talk to the same registry.
  Backing(std::unique_ptr<upstream::RegistryClient> reader,
          std::unique_ptr<upstream::RegistryClient> writer, BackingOptions options,
          metadata::MetadataStore& meta, storage::BlobStore& blobs, Metrics& metrics);
  ~Backing();
  Backing(const Backing&) = delete;
  Backing& operator=(const Backing&) = delete;

  // Where `repository` of the upstream registry `registry` lives in the backing registry.
  std::string Repository(const std::string& registry, const std::string& repository) const;
  const std::string& registry() const;

  // ---- read side ----
  // A manifest by tag or digest: the exact bytes, verified against their digest.
  Result<upstream::FetchedManifest> GetManifest(const std::string& target,
                                                const std::string& reference);
  Result<std::optional<uint64_t>> StatBlob(const std::string& target, const oci::Digest& digest);
  // As RegistryClient::FetchBlob. kNotFound before `on_size` was called means not there. A
  // failure after it is marked Origin::kBacking; a kIntegrity one distrusts the digest.
  Status FetchBlob(const std::string& target, const oci::Digest& digest,
                   const std::function<Status(uint64_t)>& on_size,
                   const std::function<Status(const char*, size_t)>& sink);
  // Whether fills of `digest` must skip the backing registry (its copy failed verification and
  // no verified copy replaced it yet; forgotten after kDistrustFor, to try it again).
  bool Distrusted(const oci::Digest& digest);
  static constexpr std::chrono::hours kDistrustFor{1};

  // ---- write side ----
  // Queues a copy (recorded durably first). Never blocks on the network.
  void Put(const metadata::BackingWork& work);
  // Content read from the backing registry is there already: no copy needed for it.
  void NotePresent(const std::string& target, const oci::Digest& digest);

  // Loads work left by an earlier run and starts the copy threads.
  Status Start();
  // Stops the copy threads after the copies in progress (their transfers are aborted within a
  // second by the writer's cancel flag, set by the caller). Queued work stays recorded.
  void Shutdown();

  size_t queued();

 private:
  struct Item {
    metadata::BackingWork work;
    int attempts = 0;
  };
  enum class Outcome { kDone, kRetry, kWait, kDrop };
  struct Attempt {
    Outcome outcome = Outcome::kDone;
    std::string reason;  // metric label for retries and drops
    Status status;
  };

  static std::string KeyOf(const metadata::BackingWork& w);
  void Enqueue(Item item, bool record);
  void Loop();
  Attempt Process(const metadata::BackingWork& w);
  // Whether content known to be present by the time PushAlone may run is pushed again (a tag:
  // yes, it may point elsewhere there) or skipped.
  enum class IfPresent { kSkip, kPush };
  // Runs `push` (returning Attempt) while no other thread pushes `digest` into `target`.
  template <typename Push>
  Attempt PushAlone(const std::string& target, const oci::Digest& digest, IfPresent if_present,
                    Push&& push);
  Attempt PushBlob(const std::string& target, const oci::Digest& digest);
  Attempt PushBlobOnce(const std::string& target, const oci::Digest& digest);
  // The streamed upload of the locally stored blob (monolithic, chunked if refused), mounting
  // from `from` when it is set; kWait when the blob is no longer stored here.
  Attempt Upload(const std::string& target, const oci::Digest& digest, const std::string& from);
  // A distrusted blob's write-back: confirm the copy is bad, delete it, upload, confirm again.
  Attempt Repair(const std::string& target, const oci::Digest& digest);
  // Reads the backing's copy through and verifies it against the digest and the local size.
  Status VerifyCopy(const std::string& target, const oci::Digest& digest, uint64_t size);
  void Distrust(const std::string& target, const oci::Digest& digest, const Status& why);
  void Trust(const oci::Digest& digest);
  Attempt PushManifest(const std::string& target, const oci::Digest& digest, const std::string& tag,
                       int depth);
  Attempt Failed(const std::string& target, const Status& s);
  void Finish(Item item, const Attempt& r);
  bool IsPresent(const std::string& target, const oci::Digest& digest);
  void MarkPresent(const std::string& target, const oci::Digest& digest, bool blob);
  void WakeWaiting(const std::string& target);
  void PublishQueue();

  std::unique_ptr<upstream::RegistryClient> reader_;
  std::unique_ptr<upstream::RegistryClient> writer_;
  const BackingOptions options_;
  metadata::MetadataStore& meta_;
  storage::BlobStore& blobs_;
  Metrics& metrics_;
  CircuitBreaker breaker_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::deque<Item> ready_;
  std::multimap<std::chrono::steady_clock::time_point, Item> waiting_;
  std::unordered_set<std::string> queued_keys_;
  std::vector<std::thread> threads_;

  // What the backing registry is known to hold ("target|digest"), and one repository there per
  // blob to mount it from. Bounded: cleared when full (a miss costs one HEAD).
  std::mutex known_mu_;
  std::unordered_set<std::string> present_;
  std::unordered_map<std::string, std::string> blob_home_;
  std::set<std::string> missing_repositories_;  // logged once each
  // Digests whose backing copy failed verification, and until when (see Distrusted).
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> distrusted_;
  // Blobs being pushed now ("target|digest"): a second pusher waits for the first (a manifest
  // pushes its blobs inline while their own queue items may run on other threads).
  std::unordered_set<std::string> pushing_;
  std::condition_variable pushed_cv_;
};

}  // namespace regcache::cache
