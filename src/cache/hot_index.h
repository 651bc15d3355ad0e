// In-memory index of what a warm cache answers most: fresh tags, manifest bytes, and which
// repository links which digest. Lets the server answer hits on its event loop without a thread
// hop or a SQLite query. It only ever holds copies of what the metadata and blob stores hold, so
// losing an entry costs a store lookup, never correctness. Bounded: past its limits it drops
// arbitrary entries (a cheap approximation of random eviction, which suits a front cache).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "metadata/metadata_store.h"
#include "oci/digest.h"

namespace regcache::cache {

// A stored manifest: the exact bytes, shared by every response that sends them.
struct CachedManifest {
  std::string bytes;
  std::string media_type;
  oci::Digest digest;
};

struct HotIndexLimits {
  size_t max_tags = 100000;
  size_t max_links = 200000;
  size_t max_manifest_bytes = 64u << 20;
};

class HotIndex {
 public:
  explicit HotIndex(HotIndexLimits limits = {});

  // Keys are built by the caller (upstream, repository and tag or digest), e.g. with Key().
  static std::string Key(const std::string& upstream, const std::string& repo,
                         const std::string& ref);

  std::optional<metadata::TagRecord> GetTag(const std::string& key);
  // A tag and its manifest bytes in one lookup (the warm-hit path): nullopt unless both are held.
  struct TagManifest {
    int64_t checked_at = 0;
    std::shared_ptr<const CachedManifest> manifest;
  };
  std::optional<TagManifest> GetTagManifest(const std::string& key);
  void PutTag(const std::string& key, const metadata::TagRecord& record);
  void EraseTag(const std::string& key);

  std::shared_ptr<const CachedManifest> GetManifest(const oci::Digest& digest);
  void PutManifest(const oci::Digest& digest, std::shared_ptr<const CachedManifest> manifest);

  std::optional<uint64_t> GetLink(const std::string& key);
  void PutLink(const std::string& key, uint64_t size);

 private:
  template <typename Map>
  static void Trim(Map& map, size_t max);

  const HotIndexLimits limits_;
  std::mutex mu_;
  std::unordered_map<std::string, metadata::TagRecord> tags_;
  std::unordered_map<std::string, uint64_t> links_;
  std::unordered_map<std::string, std::shared_ptr<const CachedManifest>> manifests_;
  size_t manifest_bytes_ = 0;
};

}  // namespace regcache::cache
