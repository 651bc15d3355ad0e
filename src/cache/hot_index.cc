#include "cache/hot_index.h"

namespace regcache::cache {

HotIndex::HotIndex(HotIndexLimits limits) : limits_(limits) {}

std::string HotIndex::Key(const std::string& upstream, const std::string& repo,
                          const std::string& ref) {
  std::string key;
  key.reserve(upstream.size() + repo.size() + ref.size() + 2);
  // '|' appears in no upstream name, repository, tag or digest.
  key.append(upstream).push_back('|');
  key.append(repo).push_back('|');
  key.append(ref);
  return key;
}

template <typename Map>
void HotIndex::Trim(Map& map, size_t max) {
  if (map.size() <= max) return;
  // Drop an eighth at once so trimming is rare; iteration order is arbitrary.
  size_t drop = map.size() - max + max / 8;
  for (auto it = map.begin(); it != map.end() && drop > 0; --drop) it = map.erase(it);
}

std::optional<metadata::TagRecord> HotIndex::GetTag(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tags_.find(key);
  if (it == tags_.end()) return std::nullopt;
  return it->second;
}

std::optional<HotIndex::TagManifest> HotIndex::GetTagManifest(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto tag = tags_.find(key);
  if (tag == tags_.end()) return std::nullopt;
  auto m = manifests_.find(tag->second.digest.str());
  if (m == manifests_.end()) return std::nullopt;
  return TagManifest{tag->second.checked_at, m->second};
}

void HotIndex::PutTag(const std::string& key, const metadata::TagRecord& record) {
  std::lock_guard<std::mutex> lock(mu_);
  tags_[key] = record;
  Trim(tags_, limits_.max_tags);
}

void HotIndex::EraseTag(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  tags_.erase(key);
}

std::shared_ptr<const CachedManifest> HotIndex::GetManifest(const oci::Digest& digest) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = manifests_.find(digest.str());
  return it == manifests_.end() ? nullptr : it->second;
}

void HotIndex::PutManifest(const oci::Digest& digest,
                           std::shared_ptr<const CachedManifest> manifest) {
  if (!manifest || manifest->bytes.size() > limits_.max_manifest_bytes / 4) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = manifests_.emplace(digest.str(), manifest);
  if (!inserted) return;  // content-addressed: the bytes are the same
  manifest_bytes_ += manifest->bytes.size();
  for (auto victim = manifests_.begin();
       manifest_bytes_ > limits_.max_manifest_bytes && victim != manifests_.end();) {
    if (victim->first == digest.str()) {
      ++victim;
      continue;
    }
    manifest_bytes_ -= victim->second->bytes.size();
    victim = manifests_.erase(victim);
  }
}

std::optional<uint64_t> HotIndex::GetLink(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = links_.find(key);
  if (it == links_.end()) return std::nullopt;
  return it->second;
}

void HotIndex::PutLink(const std::string& key, uint64_t size) {
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = links_.emplace(key, size);
  if (!inserted && it->second == 0) it->second = size;  // first known size wins, as in SQLite
  Trim(links_, limits_.max_links);
}

}  // namespace regcache::cache
