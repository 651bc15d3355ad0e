// What the cache holds on disk and how it is used, in memory: the size, hit count and last use
// of every stored blob, and the eviction policy over them.
//
// Policy: LFU with dynamic aging (GDSF with cost = size, the variant that maximizes the byte hit
// ratio). A blob's priority is H = L + hits, where L is the highest priority evicted so far and
// is taken when the blob enters or is hit; the lowest H goes first (ties: least recently used).
// Frequency keeps shared base layers (hit by every image built on them) over one-off layers,
// and the aging term lets a once-popular blob go when it stops being used. Manifests are never
// chosen: they are tiny and every manifest GET counts against Docker Hub's quota.
//
// Memory: about 110 bytes per blob as measured (a 32-byte binary digest key, a 32-byte entry,
// hash-table overhead); a million blobs (terabytes of layers) cost about 110 MB.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "metadata/metadata_store.h"
#include "oci/digest.h"

namespace regcache::cache {

class BlobLedger {
 public:
  struct Victim {
    oci::Digest digest;
    uint64_t size = 0;
  };

  // Start-up: a row from the metadata store, or a blob file found by the reconciliation scan
  // (`hits` 0: unknown use). Does not mark anything for saving.
  void Load(const metadata::BlobUsage& usage);
  // A blob was committed (manifests with `manifest`).
  void Added(const oci::Digest& digest, uint64_t size, bool manifest);
  // A client was served the blob.
  void Touched(const oci::Digest& digest);
  void Removed(const oci::Digest& digest);
  bool Contains(const oci::Digest& digest);
  // Whether the ledger holds the blob as a manifest.
  bool IsManifest(const oci::Digest& digest);
  // The committed size of a stored blob, nullopt if the ledger does not hold it.
  std::optional<uint64_t> SizeOf(const oci::Digest& digest);

  uint64_t bytes();
  uint64_t blobs();

  // Start-up reconciliation without a second copy of the digests: BeginSweep unmarks every
  // entry, the scan marks what it finds (Seen returns false for a blob the ledger did not know),
  // and EndSweep returns what was never seen; blobs added meanwhile count as seen.
  void BeginSweep();
  bool Seen(const oci::Digest& digest);
  std::vector<oci::Digest> EndSweep();

  // The blobs to evict, lowest priority first, until together they free at least `bytes`
  // (fewer if not enough is evictable). Raises the aging value to the last one's priority.
  // The caller removes the files, then calls Removed for each.
  std::vector<Victim> ChooseVictims(uint64_t bytes);

  // Every entry is saved again with the next changes (the metadata store lost its rows).
  void MarkAllDirty();
  // Rows changed or removed since the last call, for the metadata store.
  void TakeChanges(std::vector<metadata::BlobUsage>* upserts, std::vector<oci::Digest>* removed);

 private:
  struct Key {
    std::array<uint8_t, 32> bytes{};
    bool operator==(const Key& o) const { return bytes == o.bytes; }
  };
  struct KeyHash {
    size_t operator()(const Key& k) const;
  };
  struct Entry {
    uint64_t size = 0;
    uint64_t base = 0;  // the aging value when the blob entered or was last hit
    uint32_t hits = 0;
    uint32_t last_access = 0;  // unix seconds
    bool manifest = false;
    bool dirty = false;
    bool seen = true;  // by the running sweep
    uint64_t priority() const { return base + hits; }
  };

  // sha256 digests (all real-world layers) use the compact map; anything else the string map.
  static bool ToKey(const oci::Digest& digest, Key* key);
  static oci::Digest DigestOf(const Key& key);
  Entry* Find(const oci::Digest& digest);
  Entry& Insert(const oci::Digest& digest);
  void MarkDirty(const oci::Digest& digest, Entry& e);
  bool EraseEntry(const oci::Digest& digest, Entry* out);

  std::mutex mu_;
  std::unordered_map<Key, Entry, KeyHash> sha256_;
  std::unordered_map<std::string, Entry> other_;
  uint64_t bytes_ = 0;
  uint64_t aging_ = 0;  // L
  std::vector<oci::Digest> dirty_;
  std::vector<oci::Digest> removed_;
};

}  // namespace regcache::cache
