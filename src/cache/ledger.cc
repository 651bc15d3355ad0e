#include "cache/ledger.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <tuple>

namespace regcache::cache {
namespace {

uint32_t NowSeconds32() {
  return static_cast<uint32_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

}  // namespace

size_t BlobLedger::KeyHash::operator()(const Key& k) const {
  size_t h;
  std::memcpy(&h, k.bytes.data(), sizeof(h));  // a digest is uniformly distributed already
  return h;
}

bool BlobLedger::ToKey(const oci::Digest& digest, Key* key) {
  if (digest.algorithm() != oci::DigestAlgorithm::kSha256 || digest.hex().size() != 64) {
    return false;
  }
  for (size_t i = 0; i < 32; ++i) {
    int hi = HexValue(digest.hex()[2 * i]), lo = HexValue(digest.hex()[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    key->bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

oci::Digest BlobLedger::DigestOf(const Key& key) {
  static const char* kHex = "0123456789abcdef";
  std::string text = "sha256:";
  for (uint8_t b : key.bytes) {
    text.push_back(kHex[b >> 4]);
    text.push_back(kHex[b & 15]);
  }
  return oci::Digest::Parse(text).value();  // 64 hex digits: always a valid sha256 digest
}

BlobLedger::Entry* BlobLedger::Find(const oci::Digest& digest) {
  Key key;
  if (ToKey(digest, &key)) {
    auto it = sha256_.find(key);
    return it == sha256_.end() ? nullptr : &it->second;
  }
  auto it = other_.find(digest.str());
  return it == other_.end() ? nullptr : &it->second;
}

BlobLedger::Entry& BlobLedger::Insert(const oci::Digest& digest) {
  Key key;
  if (ToKey(digest, &key)) return sha256_[key];
  return other_[digest.str()];
}

bool BlobLedger::EraseEntry(const oci::Digest& digest, Entry* out) {
  Key key;
  if (ToKey(digest, &key)) {
    auto it = sha256_.find(key);
    if (it == sha256_.end()) return false;
    *out = it->second;
    sha256_.erase(it);
    return true;
  }
  auto it = other_.find(digest.str());
  if (it == other_.end()) return false;
  *out = it->second;
  other_.erase(it);
  return true;
}

void BlobLedger::MarkDirty(const oci::Digest& digest, Entry& e) {
  if (e.dirty) return;
  e.dirty = true;
  dirty_.push_back(digest);
}

void BlobLedger::Load(const metadata::BlobUsage& usage) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry& e = Insert(usage.digest);
  bytes_ -= e.size;
  e.size = usage.size;
  e.manifest = usage.manifest;
  e.hits = std::max<uint32_t>(usage.hits, 1);
  e.last_access = static_cast<uint32_t>(usage.last_access);
  e.base = 0;  // the aging value restarts at 0 after a restart, for every blob alike
  bytes_ += e.size;
}

void BlobLedger::Added(const oci::Digest& digest, uint64_t size, bool manifest) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry& e = Insert(digest);
  bytes_ -= e.size;
  e.size = size;
  e.manifest = manifest;
  e.hits = std::max<uint32_t>(e.hits, 1);
  e.base = aging_;
  e.last_access = NowSeconds32();
  e.seen = true;
  bytes_ += size;
  MarkDirty(digest, e);
}

void BlobLedger::BeginSweep() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [k, e] : sha256_) e.seen = false;
  for (auto& [k, e] : other_) e.seen = false;
}

bool BlobLedger::Seen(const oci::Digest& digest) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry* e = Find(digest);
  if (!e) return false;
  e->seen = true;
  return true;
}

std::vector<oci::Digest> BlobLedger::EndSweep() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<oci::Digest> unseen;
  for (auto& [key, e] : sha256_) {
    if (!e.seen) unseen.push_back(DigestOf(key));
  }
  for (auto& [digest, e] : other_) {
    if (e.seen) continue;
    if (auto d = oci::Digest::Parse(digest); d.ok()) unseen.push_back(*d);
  }
  for (auto& [k, e] : sha256_) e.seen = true;
  for (auto& [k, e] : other_) e.seen = true;
  return unseen;
}

void BlobLedger::Touched(const oci::Digest& digest) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry* e = Find(digest);
  if (!e) return;
  if (e->hits < UINT32_MAX) ++e->hits;
  e->base = aging_;
  e->last_access = NowSeconds32();
  MarkDirty(digest, *e);
}

void BlobLedger::Removed(const oci::Digest& digest) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry e;
  if (!EraseEntry(digest, &e)) return;
  bytes_ -= e.size;
  removed_.push_back(digest);
}

bool BlobLedger::Contains(const oci::Digest& digest) {
  std::lock_guard<std::mutex> lock(mu_);
  return Find(digest) != nullptr;
}

bool BlobLedger::IsManifest(const oci::Digest& digest) {
  std::lock_guard<std::mutex> lock(mu_);
  const Entry* e = Find(digest);
  return e && e->manifest;
}

std::optional<uint64_t> BlobLedger::SizeOf(const oci::Digest& digest) {
  std::lock_guard<std::mutex> lock(mu_);
  const Entry* e = Find(digest);
  return e ? std::optional<uint64_t>(e->size) : std::nullopt;
}

uint64_t BlobLedger::bytes() {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_;
}

uint64_t BlobLedger::blobs() {
  std::lock_guard<std::mutex> lock(mu_);
  return sha256_.size() + other_.size();
}

std::vector<BlobLedger::Victim> BlobLedger::ChooseVictims(uint64_t bytes) {
  // Every evictable blob as (priority, last access, key, size), copied under the lock (hits
  // take it on the event loop) and sorted outside it, lowest first. 56 bytes a blob while a
  // pass runs; digests are spelled out only for the chosen.
  struct Candidate {
    uint64_t priority;
    uint32_t last_access;
    Key key;
    uint64_t size;
    bool operator<(const Candidate& o) const {
      return std::tie(priority, last_access) < std::tie(o.priority, o.last_access);
    }
  };
  std::vector<Candidate> candidates;
  std::vector<std::pair<uint64_t, std::string>> others;  // non-sha256: rare
  {
    std::lock_guard<std::mutex> lock(mu_);
    candidates.reserve(sha256_.size());
    for (const auto& [key, e] : sha256_) {
      if (!e.manifest) candidates.push_back({e.priority(), e.last_access, key, e.size});
    }
    for (const auto& [digest, e] : other_) {
      if (!e.manifest) others.push_back({e.priority(), digest});
    }
  }
  std::sort(candidates.begin(), candidates.end());
  std::sort(others.begin(), others.end());
  std::vector<Victim> out;
  uint64_t freed = 0, highest = 0;
  for (const auto& c : candidates) {
    if (freed >= bytes) break;
    out.push_back(Victim{DigestOf(c.key), c.size});
    freed += c.size;
    highest = std::max(highest, c.priority);
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [priority, digest] : others) {
    if (freed >= bytes) break;
    auto it = other_.find(digest);
    auto d = oci::Digest::Parse(digest);
    if (it == other_.end() || !d.ok()) continue;
    out.push_back(Victim{*d, it->second.size});
    freed += it->second.size;
    highest = std::max(highest, priority);
  }
  aging_ = std::max(aging_, highest);
  return out;
}

void BlobLedger::MarkAllDirty() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [key, e] : sha256_) {
    if (e.dirty) continue;
    e.dirty = true;
    dirty_.push_back(DigestOf(key));
  }
  for (auto& [digest, e] : other_) {
    if (e.dirty) continue;
    if (auto d = oci::Digest::Parse(digest); d.ok()) {
      e.dirty = true;
      dirty_.push_back(*d);
    }
  }
}

void BlobLedger::TakeChanges(std::vector<metadata::BlobUsage>* upserts,
                             std::vector<oci::Digest>* removed) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& d : dirty_) {
    Entry* e = Find(d);
    if (!e) continue;  // removed since
    e->dirty = false;
    upserts->push_back(metadata::BlobUsage{d, e->size, e->manifest, e->last_access, e->hits});
  }
  dirty_.clear();
  removed->insert(removed->end(), removed_.begin(), removed_.end());
  removed_.clear();
}

}  // namespace regcache::cache
