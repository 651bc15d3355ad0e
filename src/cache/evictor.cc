#include "cache/evictor.h"

#include <malloc.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cctype>
#include <cmath>

#include "base/strings.h"
#include "oci/manifest.h"

namespace regcache::cache {
namespace {

int64_t SteadySeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int64_t UnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Status ParseStorageSize(const std::string& text, StorageLimits* limits) {
  std::string t(Trim(text));
  auto bad = [&] {
    return InvalidArgument("invalid size '" + text +
                           "' (use e.g. 20GiB, 500MiB, 1TB, or 80% of the file system)");
  };
  if (EndsWith(t, "%")) {
    auto n = ParseUint(t.substr(0, t.size() - 1));
    if (!n || *n == 0 || *n > 100) return bad();
    limits->max_percent = static_cast<double>(*n);
    limits->max_bytes = 0;
    return Status::Ok();
  }
  size_t digits = 0;
  while (digits < t.size() && std::isdigit(static_cast<unsigned char>(t[digits]))) ++digits;
  auto n = ParseUint(t.substr(0, digits));
  if (!n || *n == 0) return bad();
  std::string unit = ToLower(Trim(t.substr(digits)));
  uint64_t mult;
  if (unit.empty() || unit == "b") {
    mult = 1;
  } else if (unit == "k" || unit == "kib") {
    mult = 1ull << 10;
  } else if (unit == "m" || unit == "mib") {
    mult = 1ull << 20;
  } else if (unit == "g" || unit == "gib") {
    mult = 1ull << 30;
  } else if (unit == "t" || unit == "tib") {
    mult = 1ull << 40;
  } else if (unit == "kb") {
    mult = 1000ull;
  } else if (unit == "mb") {
    mult = 1000ull * 1000;
  } else if (unit == "gb") {
    mult = 1000ull * 1000 * 1000;
  } else if (unit == "tb") {
    mult = 1000ull * 1000 * 1000 * 1000;
  } else {
    return bad();
  }
  if (*n > (1ull << 62) / mult) return bad();
  limits->max_bytes = *n * mult;
  limits->max_percent = 0;
  return Status::Ok();
}

Evictor::Evictor(storage::BlobStore& blobs, metadata::MetadataStore& meta, BlobLedger& ledger,
                 Metrics& metrics, StorageLimits limits)
    : blobs_(blobs), meta_(meta), ledger_(ledger), metrics_(metrics), limits_(limits) {}

Evictor::~Evictor() { Stop(); }

Status Evictor::Start() {
  Status loaded = meta_.LoadBlobUsage([this](const metadata::BlobUsage& u) { ledger_.Load(u); });
  // Not fatal: the reconciliation scan finds every file (a corrupt database has been replaced
  // by an empty one meanwhile, and the scan rebuilds its rows).
  if (!loaded.ok()) spdlog::warn("loading blob usage: {}", loaded.ToString());
  UpdateCap();
  Publish();
  thread_ = std::thread([this] { Loop(); });
  return Status::Ok();
}

void Evictor::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  Flush();
}

void Evictor::UpdateCap() {
  metadata_bytes_ = meta_.FileBytes();
  if (limits_.max_bytes > 0) {
    cap_ = limits_.max_bytes;
  } else if (auto space = blobs_.FilesystemSpace(); space.ok()) {
    cap_ = static_cast<uint64_t>(static_cast<double>(space->total) * limits_.max_percent / 100);
  }
  // The tag-list cache is the one part of the metadata a client can grow at will (one page per
  // distinct query): it gets a twentieth of the cap, so it can never crowd out the blobs.
  if (cap_.load() > 0) meta_.SetTagListBudget(cap_.load() / 20);
}

bool Evictor::Reserve(uint64_t size) {
  const uint64_t cap = cap_.load();
  // What eviction can never free: manifests, which are a sliver of any real store.
  if (cap == 0 || size > cap * limits_.low_watermark) return false;
  const uint64_t reserved = reserved_.fetch_add(size) + size;
  if (ledger_.bytes() + metadata_bytes_.load() + reserved > cap) Wake();
  return true;
}

void Evictor::Release(uint64_t size) {
  reserved_.fetch_sub(size);
  Wake();
}

void Evictor::Wake() {
  std::lock_guard<std::mutex> lock(mu_);
  wake_ = true;
  cv_.notify_all();
}

void Evictor::NoSpace() {
  no_space_until_ = SteadySeconds() + 60;
  Wake();
}

std::string Evictor::Degraded() {
  std::string why;
  if (SteadySeconds() < no_space_until_.load()) {
    why =
        "a miss could not be stored in the last minute (no space or no room under the cap): "
        "misses are served without being stored";
  }
  if (over_cap_) {
    if (!why.empty()) why += "; ";
    why += "the store is over its cap and nothing more can be evicted";
  }
  return why;
}

void Evictor::Publish() {
  metrics_.metadata_bytes = static_cast<int64_t>(metadata_bytes_.load());
  metrics_.store_bytes = static_cast<int64_t>(ledger_.bytes() + metadata_bytes_.load());
  metrics_.store_blobs = static_cast<int64_t>(ledger_.blobs());
  metrics_.store_cap_bytes = static_cast<int64_t>(cap_.load());
}

void Evictor::Loop() {
  Reconcile();
  // A restart with a smaller cap (or after a crash mid-pass) evicts at once.
  UpdateCap();
  Pass();
  Publish();
  // Off the start-up path and after the first pass, which it would delay: it reads the whole
  // file (0.6 s warm, 3.4-4.5 s cold for 450 MB, 2.2M rows). A replacement it causes is rebuilt
  // at once; one while serving, by the loop below.
  Status checked = meta_.CheckIntegrity();
  if (!checked.ok()) spdlog::warn("{}", checked.ToString());
  if (meta_.Replacements() != rebuilt_for_) Reconcile();
  auto next_flush = std::chrono::steady_clock::now() + limits_.flush_interval;
  auto next_retention = std::chrono::steady_clock::now() + std::chrono::minutes(1);
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, limits_.interval, [this] { return stop_ || wake_; });
      if (stop_) return;
      wake_ = false;
    }
    if (meta_.Replacements() != rebuilt_for_) Reconcile();  // replaced while serving
    UpdateCap();
    Pass();
    Publish();
    auto now = std::chrono::steady_clock::now();
    if (now >= next_flush) {
      Flush();
      next_flush = now + limits_.flush_interval;
    }
    if (now >= next_retention) {
      Retain();
      next_retention = now + std::chrono::hours(1);
    }
  }
}

void Evictor::Reconcile() {
  // After a crash the saved ledger may lag the files by a flush interval either way.
  auto started = std::chrono::steady_clock::now();
  const uint64_t replacements = meta_.Replacements();
  const bool rebuild = replacements != rebuilt_for_;
  rebuilt_for_ = replacements;
  if (rebuild) {
    metrics_.Count("regcache_metadata_rebuilds_total", "");
    ledger_.MarkAllDirty();  // the new database has no usage rows
  }
  std::vector<std::pair<oci::Digest, uint64_t>> found_only;
  size_t restored = 0;
  ledger_.BeginSweep();
  Status s = blobs_.Scan([&](const oci::Digest& d, uint64_t size) {
    if (!ledger_.Seen(d)) {
      found_only.push_back({d, size});
    } else if (rebuild && ledger_.IsManifest(d)) {
      restored += RestoreManifestType(d, size);
    }
  });
  if (!s.ok()) {
    (void)ledger_.EndSweep();
    spdlog::warn("reconciling the blob store: {}", s.ToString());
    return;
  }
  // Entries whose file is gone (a crash between unlink and saving the ledger).
  auto gone = ledger_.EndSweep();
  for (const auto& d : gone) ledger_.Removed(d);
  // Files the ledger did not know (committed just before a crash, or a store from before the
  // ledger existed): manifests are known by their recorded media type. Saved with this flush.
  for (const auto& [digest, size] : found_only) {
    auto type = meta_.GetManifestType(digest);
    bool manifest = type.ok() && type->has_value();
    if (!manifest && rebuild && RestoreManifestType(digest, size)) {
      manifest = true;
      ++restored;
    }
    ledger_.Added(digest, size, manifest);
  }
  Flush();
  if (rebuild) {
    spdlog::info("metadata rebuilt from the blob store: {} blobs' usage, {} manifest types",
                 ledger_.blobs(), restored);
  }
  // The scan's transient allocations would otherwise stay with the allocator's arenas.
  malloc_trim(0);
  spdlog::info("blob store: {} blobs, {} ({} found on disk only, {} gone) reconciled in {} ms",
               ledger_.blobs(), HumanBytes(ledger_.bytes()), found_only.size(), gone.size(),
               std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - started)
                   .count());
}

// A stored blob is a manifest if it parses as one; its media type is the one it declares (what
// StoreManifest recorded for nearly all: registries send the declared type as Content-Type).
bool Evictor::RestoreManifestType(const oci::Digest& digest, uint64_t size) {
  if (size > oci::kMaxManifestBytes) return false;
  {
    // Layers are by far most of the files: one read of a few bytes tells them apart.
    auto fd = blobs_.Open(digest);
    if (!fd.ok()) return false;
    char head[16];
    ssize_t n = ::pread(*fd, head, sizeof(head), 0);
    ::close(*fd);
    ssize_t i = 0;
    while (i < n && std::isspace(static_cast<unsigned char>(head[i]))) ++i;
    if (i >= n || head[i] != '{') return false;
  }
  auto bytes = blobs_.ReadAll(digest, oci::kMaxManifestBytes);
  if (!bytes.ok()) return false;
  auto parsed = oci::ParseManifest(*bytes, "");
  if (!parsed.ok()) return false;  // a config blob, or other JSON
  Status s = meta_.PutManifestType(digest, parsed->media_type);
  if (!s.ok()) spdlog::warn("restoring the media type of {}: {}", digest.str(), s.ToString());
  return s.ok();
}

void Evictor::Pass() {
  const uint64_t cap = cap_.load();
  if (cap == 0) return;
  const uint64_t low = static_cast<uint64_t>(static_cast<double>(cap) * limits_.low_watermark);
  const uint64_t meta = metadata_bytes_.load();
  const uint64_t used = ledger_.bytes() + meta + reserved_.load();
  uint64_t want = used > cap ? used - std::min(used, low) : 0;
  // "size": over the cap; "space": the file system is short of free space (floor, ENOSPC).
  const char* reason = "size";
  auto space = blobs_.FilesystemSpace();
  if (space.ok() && space->total > 0) {
    const uint64_t floor =
        static_cast<uint64_t>(static_cast<double>(space->total) * limits_.min_free_percent / 100);
    if (space->available < floor && floor - space->available > want) {
      want = floor - space->available;
      reason = "space";
    }
  }
  if (SteadySeconds() < no_space_until_.load() && want == 0) {
    want = std::min<uint64_t>(ledger_.bytes() / 10, 256ull << 20);
    reason = "space";
  }
  if (want == 0) {
    over_cap_ = false;
    return;
  }
  auto victims = ledger_.ChooseVictims(want);
  uint64_t freed = 0;
  size_t done = 0, removed = 0;
  for (const auto& v : victims) {
    if (++done % 2000 == 0) {
      // A long pass (hundreds of thousands of files) keeps metrics current and its removals
      // saved as it goes (in small transactions: lookups share the database), so a stop does not
      // have them all to write.
      Publish();
      Flush();
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) break;
    }
    Status s = blobs_.Remove(v.digest);
    if (!s.ok()) {
      spdlog::warn("evicting {}: {}", v.digest.str(), s.ToString());
      continue;
    }
    ledger_.Removed(v.digest);
    freed += v.size;
    ++removed;
  }
  const std::string label = std::string("reason=\"") + reason + "\"";
  metrics_.Count("regcache_evictions_total", label, removed);
  metrics_.Count("regcache_evicted_bytes_total", label, freed);
  over_cap_ = ledger_.bytes() + meta > cap;
  spdlog::info("evicted {} blobs ({}, reason {}) to stay within {}", removed, HumanBytes(freed),
               reason, HumanBytes(cap));
}

void Evictor::Flush() {
  std::vector<metadata::BlobUsage> upserts;
  std::vector<oci::Digest> removed;
  ledger_.TakeChanges(&upserts, &removed);
  if (upserts.empty() && removed.empty()) return;
  Status s = meta_.SaveBlobUsage(upserts, removed);
  if (!s.ok()) spdlog::warn("saving blob usage: {}", s.ToString());
}

void Evictor::Retain() {
  auto r = meta_.ExpireUnused(UnixSeconds() - std::chrono::seconds(limits_.retention).count());
  if (!r.ok()) {
    spdlog::warn("metadata retention: {}", r.status().ToString());
    return;
  }
  if (r->tags > 0 || r->links > 0) {
    spdlog::info("metadata retention: removed {} tags and {} links unused for {} days", r->tags,
                 r->links, limits_.retention.count() / 24);
    metrics_.Count("regcache_metadata_expired_total", "kind=\"tag\"", r->tags);
    metrics_.Count("regcache_metadata_expired_total", "kind=\"link\"", r->links);
  }
  Status s = meta_.Compact(1000);
  if (!s.ok()) spdlog::warn("compacting metadata: {}", s.ToString());
}

}  // namespace regcache::cache
