// Keeps the blob store within its size cap, in the background: eviction never runs on a
// request's path, and never breaks a transfer (an evicted blob's readers keep their open
// descriptor; a fill is not in the store until it commits).
//
// Watermarks: when committed bytes plus the metadata database's file plus space reserved by
// fills in progress exceed the cap (or the file system's free space falls below the floor),
// blobs are evicted by the ledger's policy until they are at the low watermark (90% of the
// cap). The metadata's own growth is bounded too: its cached tag lists get 5% of the cap at
// most (MetadataStore::SetTagListBudget). Also here: loading and reconciling the ledger at
// start-up, saving it in batches, metadata retention, the metadata database's integrity check
// (in the background after start) and rebuilding what a replaced database lost that the blob
// files can tell (blob usage, manifest media types).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "base/status.h"
#include "cache/ledger.h"
#include "cache/metrics.h"
#include "metadata/metadata_store.h"
#include "storage/blob_store.h"

namespace regcache::cache {

struct StorageLimits {
  // The cap: absolute bytes, or (when `max_percent` > 0) that share of the data directory's
  // file system.
  uint64_t max_bytes = 0;
  double max_percent = 80;
  double low_watermark = 0.9;      // evict down to this share of the cap
  double min_free_percent = 5;     // and keep at least this much of the file system free
  std::chrono::milliseconds interval{2000};  // how often usage is checked without a wake-up
  std::chrono::seconds flush_interval{30};   // how often usage is saved
  std::chrono::hours retention{24 * 90};     // tags and links unused this long are removed
};

// Parses "20GiB", "500MiB", "1TB", "123456" (bytes) or "80%" into `limits`.
Status ParseStorageSize(const std::string& text, StorageLimits* limits);

class Evictor {
 public:
  Evictor(storage::BlobStore& blobs, metadata::MetadataStore& meta, BlobLedger& ledger,
          Metrics& metrics, StorageLimits limits);
  ~Evictor();  // Stop()

  // Loads the ledger from the metadata store (start-up stays fast: one table read), then starts
  // the background thread, which first reconciles the ledger with the files on disk, evicts if
  // over the cap, then checks the metadata database (PRAGMA quick_check).
  Status Start();
  // Saves what is pending and joins the thread. Idempotent.
  void Stop();

  // A fill of `size` bytes wants to commit: true if it may (room is being made in the
  // background); false if it can never fit (bigger than the cap allows): serve it without storing.
  bool Reserve(uint64_t size);
  void Release(uint64_t size);
  // A miss could not be stored (ENOSPC, too little free space, or no room under the cap): evict
  // now, and report degraded storage until a fill is stored again (at most a minute).
  void NoSpace();
  // Runs a pass now.
  void Wake();
  // A fill was stored: storing works again, whatever NoSpace said.
  void Stored() { no_space_until_ = 0; }

  uint64_t cap_bytes() const { return cap_.load(); }
  // Empty when storage is healthy; otherwise why it is degraded (for /readyz).
  std::string Degraded();

 private:
  void Loop();
  // Start-up, and again whenever the metadata database was replaced: the ledger against the
  // files; after a replacement, every usage row saved again and manifest types restored by
  // parsing the stored blobs that are manifests.
  void Reconcile();
  bool RestoreManifestType(const oci::Digest& digest, uint64_t size);
  void Pass();
  void Flush();
  void Retain();
  void UpdateCap();
  void Publish();

  storage::BlobStore& blobs_;
  metadata::MetadataStore& meta_;
  BlobLedger& ledger_;
  Metrics& metrics_;
  const StorageLimits limits_;
  std::atomic<uint64_t> cap_{0};
  std::atomic<uint64_t> reserved_{0};
  std::atomic<int64_t> no_space_until_{0};   // steady seconds
  std::atomic<bool> over_cap_{false};        // the last pass could not get under the cap
  std::atomic<uint64_t> metadata_bytes_{0};  // the metadata database's file, as last measured
  uint64_t rebuilt_for_ = 0;                 // MetadataStore::Replacements() last rebuilt for

  std::mutex mu_;
  std::condition_variable cv_;
  bool wake_ = false;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace regcache::cache
