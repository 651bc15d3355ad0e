#include "cache/pull_through.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>

#include "base/strings.h"
#include "oci/manifest.h"

namespace regcache::cache {
namespace {

// A blob larger than this is refused whatever its upstream claims (no registry stores one).
constexpr uint64_t kMaxBlobBytes = 1ull << 40;
// Bound on remembered 404s and on tags with a revalidation back-off.
constexpr size_t kMaxRemembered = 100000;
// A blob that is not stored is relayed through this much memory at most, whatever its size; a
// reader that holds the window back longer than the stall limit is cut off.
constexpr size_t kPassThroughWindow = 8u << 20;
constexpr std::chrono::milliseconds kPassThroughStall{10000};
// A fill is stored only if the file system keeps this much free beyond it.
constexpr uint64_t kFreeSpaceMargin = 16u << 20;

// tags/list and referrers pass any answer through; for the breaker, 5xx and 429 are failures.
Result<upstream::HttpResponse> RawCall(Upstream& up, const std::string& repo,
                                       const std::string& path) {
  return up.Guarded([&]() -> Result<upstream::HttpResponse> {
    auto r = up.client().GetRaw(repo, path);
    if (!r.ok()) return r;
    if (r->status == 429) {
      auto ra = upstream::ParseRetryAfter(r->headers.Get("Retry-After"),
                                          std::chrono::system_clock::now());
      return upstream::WithRetryAfter(Status(Code::kRateLimited, "upstream answered 429"),
                                      ra ? ra->count() : 0);
    }
    if (r->status >= 500) return Unavailable("upstream answered " + std::to_string(r->status));
    return r;
  });
}

}  // namespace

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

PullThroughCache::PullThroughCache(storage::BlobStore& blobs, metadata::MetadataStore& meta,
                                   Metrics& metrics, CacheOptions options)
    : blobs_(blobs), meta_(meta), metrics_(metrics), options_(options), hot_(options.hot) {}

// ---- negative cache -------------------------------------------------------------------------

bool PullThroughCache::IsKnownMissing(const std::string& key) {
  std::lock_guard<std::mutex> lock(negative_mu_);
  auto it = negative_.find(key);
  if (it == negative_.end()) return false;
  if (it->second.expires_at <= NowSeconds()) {
    negative_.erase(it);
    return false;
  }
  return true;
}

void PullThroughCache::RememberMissing(const std::string& key) {
  if (options_.negative_ttl.count() <= 0) return;
  const int64_t now = NowSeconds();
  std::lock_guard<std::mutex> lock(negative_mu_);
  if (negative_.size() >= kMaxRemembered) {
    for (auto it = negative_.begin(); it != negative_.end();) {
      it = it->second.expires_at <= now ? negative_.erase(it) : std::next(it);
    }
    if (negative_.size() >= kMaxRemembered) negative_.clear();
  }
  negative_[key] = NegativeEntry{now + options_.negative_ttl.count()};
}

// ---- access tracking ------------------------------------------------------------------------

void PullThroughCache::NoteAccess(const std::string& key, const std::string& upstream,
                                  const std::string& repo, const std::string& tag) {
  const int64_t now = NowSeconds();
  std::lock_guard<std::mutex> lock(access_mu_);
  auto& a = accessed_[key];
  if (a.at == 0) a = metadata::TagAccess{upstream, repo, tag, now};
  a.at = now;
}

void PullThroughCache::FlushAccess() {
  std::unordered_map<std::string, metadata::TagAccess> batch;
  {
    std::lock_guard<std::mutex> lock(access_mu_);
    batch.swap(accessed_);
  }
  if (batch.empty()) return;
  std::vector<metadata::TagAccess> rows;
  rows.reserve(batch.size());
  for (auto& [key, a] : batch) rows.push_back(std::move(a));
  Status s = meta_.TouchTagsAccessed(rows);
  if (!s.ok()) spdlog::warn("recording tag accesses: {}", s.ToString());
}

// ---- manifests ------------------------------------------------------------------------------

Result<std::shared_ptr<const CachedManifest>> PullThroughCache::LoadManifest(
    const oci::Digest& digest) {
  if (auto m = hot_.GetManifest(digest)) return m;
  RC_ASSIGN_OR_RETURN(auto media_type, meta_.GetManifestType(digest));
  if (!media_type) return std::shared_ptr<const CachedManifest>();
  auto bytes = blobs_.ReadAll(digest, oci::kMaxManifestBytes);
  if (!bytes.ok()) {
    if (bytes.status().code() == Code::kNotFound) return std::shared_ptr<const CachedManifest>();
    return bytes.status();
  }
  auto m = std::make_shared<const CachedManifest>(
      CachedManifest{std::move(*bytes), *media_type, digest});
  hot_.PutManifest(digest, m);
  return m;
}

Result<std::shared_ptr<const CachedManifest>> PullThroughCache::StoreManifest(
    Upstream& up, const std::string& repo, const upstream::FetchedManifest& m, bool from_backing) {
  auto parsed = oci::ParseManifest(m.bytes, m.info.media_type);
  if (!parsed.ok()) {
    // Bytes that are not a manifest are the sender's fault, not the client's: a bad gateway
    // (kIntegrity), unless they are a kind this cache does not serve (schema1: kUnsupported).
    Status bad = parsed.status().code() == Code::kInvalidArgument
                     ? Integrity("not a valid manifest: " + parsed.status().message())
                     : parsed.status();
    return bad
        .WithContext((from_backing ? "backing registry manifest " : "upstream manifest ") +
                     m.info.digest.str())
        .WithOrigin(from_backing ? Origin::kBacking : Origin::kUpstream);
  }
  // Served with the Content-Type it arrived with, when that names a manifest type.
  std::string media_type =
      oci::IsManifestMediaType(m.info.media_type) ? m.info.media_type : parsed->media_type;
  metrics_.Fetched(up.stats(), m.bytes.size());
  const std::string& name = up.name();
  // Memory first: this response and the next ones are served from the hot index even when the
  // disk or the database refuses the durable copy (disk full).
  auto cached =
      std::make_shared<const CachedManifest>(CachedManifest{m.bytes, media_type, m.info.digest});
  hot_.PutManifest(m.info.digest, cached);
  hot_.PutLink(HotIndex::Key(name, repo, m.info.digest.str()), m.bytes.size());
  // What this manifest references is, by construction, in this repository upstream.
  for (const auto& d : parsed->manifests)
    hot_.PutLink(HotIndex::Key(name, repo, d.digest.str()), d.size);
  for (const auto& d : parsed->Blobs())
    hot_.PutLink(HotIndex::Key(name, repo, d.digest.str()), d.size);

  auto durable = [&]() -> Status {
    RC_RETURN_IF_ERROR(blobs_.PutSmall(m.info.digest, m.bytes));
    if (ledger_) ledger_->Added(m.info.digest, m.bytes.size(), true);
    RC_RETURN_IF_ERROR(meta_.PutManifestType(m.info.digest, media_type));
    RC_RETURN_IF_ERROR(
        meta_.Link(name, repo, m.info.digest, metadata::ContentKind::kManifest, m.bytes.size()));
    for (const auto& d : parsed->manifests) {
      RC_RETURN_IF_ERROR(
          meta_.Link(name, repo, d.digest, metadata::ContentKind::kManifest, d.size));
    }
    for (const auto& d : parsed->Blobs()) {
      RC_RETURN_IF_ERROR(meta_.Link(name, repo, d.digest, metadata::ContentKind::kBlob, d.size));
    }
    return Status::Ok();
  };
  Status stored = durable();
  NoteDurableFailure(stored, "storing manifest " + m.info.digest.str());
  if (backing_) {
    const std::string target = BackingRepository(up, repo);
    if (from_backing) {
      backing_->NotePresent(target, m.info.digest);
    } else if (stored.ok()) {
      // Copied from the local store later: only what was stored durably can be.
      backing_->Put({metadata::ContentKind::kManifest, target, m.info.digest, ""});
    }
  }
  return std::shared_ptr<const CachedManifest>(cached);
}

void PullThroughCache::NoteDurableFailure(const Status& s, const std::string& what) {
  if (s.ok()) return;
  spdlog::warn("{}: {} (served from memory)", what, s.ToString());
  // A corrupt database is not a full disk: it has been replaced, and says so itself.
  if (evictor_ && !metadata::IsCorruption(s)) evictor_->NoSpace();
}

Status PullThroughCache::PutTag(Upstream& up, const std::string& repo, const std::string& tag,
                                const metadata::TagRecord& record, bool to_backing) {
  hot_.PutTag(HotIndex::Key(up.name(), repo, tag), record);
  NoteDurableFailure(meta_.PutTag(up.name(), repo, tag, record), "storing tag " + tag);
  if (backing_ && to_backing) {
    backing_->Put(
        {metadata::ContentKind::kManifest, BackingRepository(up, repo), record.digest, tag});
  }
  return Status::Ok();
}

Result<ManifestLookup> PullThroughCache::LookupManifest(Upstream& up, const std::string& repo,
                                                        const std::string& reference,
                                                        bool memory_only) {
  const std::string key = HotIndex::Key(up.name(), repo, reference);
  ManifestLookup out;
  out.state = LookupState::kNeedStore;
  const bool by_digest = reference.find(':') != std::string::npos;

  if (by_digest) {
    RC_ASSIGN_OR_RETURN(oci::Digest d, oci::Digest::Parse(reference));
    auto link = hot_.GetLink(key);
    auto m = hot_.GetManifest(d);
    if (!(link && m)) {
      if (memory_only) return out;
      if (!link) {
        RC_ASSIGN_OR_RETURN(link, meta_.Linked(up.name(), repo, d));
        if (!link) {
          out.state = LookupState::kCold;
          return out;
        }
        hot_.PutLink(key, *link);
      }
      RC_ASSIGN_OR_RETURN(m, LoadManifest(d));
      if (!m) {
        out.state = LookupState::kCold;
        return out;
      }
    }
    out.state = LookupState::kHit;
    out.response.manifest = std::move(m);
    out.response.digest = d;
    out.response.result = "hit";
    return out;
  }

  if (auto warm = hot_.GetTagManifest(key)) {
    const bool fresh = NowSeconds() - warm->checked_at < up.TtlFor(repo).count();
    out.state = fresh ? LookupState::kHit : LookupState::kStale;
    out.response.digest = warm->manifest->digest;
    out.response.manifest = std::move(warm->manifest);
    out.response.result = fresh ? "hit" : "stale";
    NoteAccess(key, up.name(), repo, reference);
    return out;
  }
  auto row = hot_.GetTag(key);
  if (!row) {
    if (memory_only) return out;
    RC_ASSIGN_OR_RETURN(row, meta_.GetTag(up.name(), repo, reference));
    if (!row) {
      out.state = LookupState::kCold;
      return out;
    }
    hot_.PutTag(key, *row);
  }
  auto m = hot_.GetManifest(row->digest);
  if (!m) {
    if (memory_only) return out;
    RC_ASSIGN_OR_RETURN(m, LoadManifest(row->digest));
    if (!m) {
      out.state = LookupState::kCold;
      return out;
    }
  }
  const bool fresh = NowSeconds() - row->checked_at < up.TtlFor(repo).count();
  out.state = fresh ? LookupState::kHit : LookupState::kStale;
  out.response.manifest = std::move(m);
  out.response.digest = row->digest;
  out.response.result = fresh ? "hit" : "stale";
  NoteAccess(key, up.name(), repo, reference);
  return out;
}

std::shared_ptr<Flight> PullThroughCache::Revalidate(Upstream& up, const std::string& repo,
                                                     const std::string& tag, bool* started) {
  *started = false;
  if (!up.breaker().Check().ok()) return nullptr;
  const std::string key = HotIndex::Key(up.name(), repo, tag);
  std::shared_ptr<Flight> flight;
  {
    std::lock_guard<std::mutex> lock(revalidations_mu_);
    if (auto it = revalidations_.find(key); it != revalidations_.end()) return it->second;
    if (auto b = revalidation_backoff_.find(key);
        b != revalidation_backoff_.end() && std::chrono::steady_clock::now() < b->second.next) {
      return nullptr;
    }
    flight = std::make_shared<Flight>();
    revalidations_[key] = flight;
  }
  bool queued = up.requests().TrySubmit([this, &up, repo, tag, key, flight] {
    Status s = RevalidateNow(up, repo, tag);
    {
      std::lock_guard<std::mutex> lock(revalidations_mu_);
      revalidations_.erase(key);
      if (s.ok() || s.code() == Code::kNotFound) {
        revalidation_backoff_.erase(key);
      } else {
        auto& b = revalidation_backoff_[key];
        b.period = std::min(options_.max_revalidate_backoff,
                            std::max(options_.revalidate_backoff, b.period * 2));
        b.next = std::chrono::steady_clock::now() + b.period;
        if (revalidation_backoff_.size() > kMaxRemembered) revalidation_backoff_.clear();
      }
    }
    flight->Complete(s);
  });
  if (!queued) {
    std::lock_guard<std::mutex> lock(revalidations_mu_);
    revalidations_.erase(key);
    metrics_.Count("regcache_upstream_refused_total",
                   "upstream=\"" + up.name() + "\",reason=\"overload\"");
    return nullptr;
  }
  *started = true;
  return flight;
}

Status PullThroughCache::RevalidateNow(Upstream& up, const std::string& repo,
                                       const std::string& tag) {
  const std::string& name = up.name();
  const std::string labels = "upstream=\"" + name + "\",outcome=";
  RC_ASSIGN_OR_RETURN(auto row, meta_.GetTag(name, repo, tag));
  if (!row) return NotFound("tag is no longer cached");
  // A HEAD costs no Docker Hub pull.
  auto info = up.Guarded([&] { return up.client().HeadManifest(repo, tag); });
  if (!info.ok()) {
    if (info.status().code() == Code::kNotFound) {
      // Gone upstream: forget it, so the next request answers 404 (and remembers that).
      metrics_.Count("regcache_revalidations_total", labels + "\"gone\"");
      RC_RETURN_IF_ERROR(meta_.DeleteTag(name, repo, tag));
      hot_.EraseTag(HotIndex::Key(name, repo, tag));
      RememberMissing(HotIndex::Key(name, repo, tag));
      return info.status();
    }
    metrics_.Count("regcache_revalidations_total", labels + "\"failed\"");
    spdlog::warn("revalidating {}/{}:{}: {}", name, repo, tag, info.status().ToString());
    return info.status();
  }
  const int64_t now = NowSeconds();
  if (info->digest == row->digest) {
    metrics_.Count("regcache_revalidations_total", labels + "\"same\"");
    row->checked_at = now;
    hot_.PutTag(HotIndex::Key(name, repo, tag), *row);
    NoteDurableFailure(meta_.TouchTagChecked(name, repo, tag, now), "revalidating tag " + tag);
    return Status::Ok();
  }
  // The tag moved: fetch the new manifest by the digest the HEAD reported.
  metrics_.Count("regcache_revalidations_total", labels + "\"moved\"");
  bool from_backing = false;
  auto fetched = GetManifestByDigest(up, repo, info->digest, &from_backing);
  if (!fetched.ok()) return fetched.status();
  RC_ASSIGN_OR_RETURN(auto m, StoreManifest(up, repo, *fetched, from_backing));
  return PutTag(
      up, repo, tag,
      metadata::TagRecord{fetched->info.digest, m->media_type, m->bytes.size(), now, now});
}

Result<ManifestResponse> PullThroughCache::FetchManifest(Upstream& up, const std::string& repo,
                                                         const std::string& reference) {
  const std::string key = HotIndex::Key(up.name(), repo, reference);
  if (IsKnownMissing(key)) {
    metrics_.Request("manifest", "negative", up.stats());
    return NotFound("manifest unknown to upstream " + up.name() + " (remembered)");
  }
  bool joined = false;
  auto r = manifest_fetches_.Do(
      key, [&] { return FetchManifestOnce(up, repo, reference); }, &joined);
  if (joined && r.ok()) r->result = "coalesced";
  return r;
}

Result<ManifestResponse> PullThroughCache::FetchManifestOnce(Upstream& up, const std::string& repo,
                                                             const std::string& reference) {
  const std::string& name = up.name();
  const std::string key = HotIndex::Key(name, repo, reference);
  auto& client = up.client();
  // Whoever held this key before us may have stored it.
  RC_ASSIGN_OR_RETURN(auto local, LookupManifest(up, repo, reference, false));
  if (local.state == LookupState::kHit) {
    local.response.result = "coalesced";
    return local.response;
  }
  auto missing = [&](const Status& s) -> Status {
    if (s.code() == Code::kNotFound) RememberMissing(key);
    return s;
  };
  ManifestResponse out;
  out.result = "miss";
  if (reference.find(':') != std::string::npos) {
    RC_ASSIGN_OR_RETURN(oci::Digest d, oci::Digest::Parse(reference));
    if (backing_) {
      // The backing registry holding it in this repository is as good as upstream's word.
      auto b = backing_->GetManifest(BackingRepository(up, repo), reference);
      if (b.ok()) {
        RC_ASSIGN_OR_RETURN(out.manifest, StoreManifest(up, repo, *b, true));
        out.digest = d;
        out.result = "backing";
        return out;
      }
    }
    RC_ASSIGN_OR_RETURN(auto stored, LoadManifest(d));
    if (stored) {
      // Stored through another repository: serve it here only once upstream confirms.
      auto info = up.Guarded([&] { return client.HeadManifest(repo, reference); });
      if (!info.ok()) return missing(info.status());
      if (!(info->digest == d)) return missing(NotFound("upstream answered with another digest"));
      hot_.PutLink(key, stored->bytes.size());
      NoteDurableFailure(meta_.Link(name, repo, d, metadata::ContentKind::kManifest, info->size),
                         "linking " + d.str());
      out.manifest = std::move(stored);
      out.digest = d;
      out.result = "hit";
      return out;
    }
    auto fetched = up.Guarded([&] { return client.GetManifest(repo, reference); });
    if (!fetched.ok()) return missing(fetched.status());
    RC_ASSIGN_OR_RETURN(out.manifest, StoreManifest(up, repo, *fetched));
    out.digest = d;
    return out;
  }
  if (backing_) return FetchTagWithBacking(up, repo, reference);
  auto fetched = up.Guarded([&] { return client.GetManifest(repo, reference); });
  if (!fetched.ok()) return missing(fetched.status());
  RC_ASSIGN_OR_RETURN(out.manifest, StoreManifest(up, repo, *fetched));
  out.digest = fetched->info.digest;
  const int64_t now = NowSeconds();
  RC_RETURN_IF_ERROR(PutTag(up, repo, reference,
                            metadata::TagRecord{out.digest, out.manifest->media_type,
                                                out.manifest->bytes.size(), now, now}));
  NoteAccess(key, name, repo, reference);
  return out;
}

Result<upstream::FetchedManifest> PullThroughCache::GetManifestByDigest(Upstream& up,
                                                                        const std::string& repo,
                                                                        const oci::Digest& digest,
                                                                        bool* from_backing) {
  *from_backing = false;
  if (backing_) {
    auto b = backing_->GetManifest(BackingRepository(up, repo), digest.str());
    if (b.ok()) {
      *from_backing = true;
      return b;
    }
  }
  return up.Guarded([&] { return up.client().GetManifest(repo, digest.str()); });
}

Result<ManifestResponse> PullThroughCache::FetchTagWithBacking(Upstream& up,
                                                               const std::string& repo,
                                                               const std::string& tag) {
  const std::string key = HotIndex::Key(up.name(), repo, tag);
  const int64_t now = NowSeconds();
  ManifestResponse out;
  out.result = "miss";
  // A HEAD costs no Docker Hub pull; the bytes then come from wherever is cheapest.
  auto info = up.Guarded([&] { return up.client().HeadManifest(repo, tag); });
  if (info.ok()) {
    RC_ASSIGN_OR_RETURN(auto stored, LoadManifest(info->digest));
    bool from_backing = false;
    if (stored) {
      // Cached through another repository (or tag): upstream's HEAD just vouched for it here.
      NoteDurableFailure(meta_.Link(up.name(), repo, info->digest, metadata::ContentKind::kManifest,
                                    stored->bytes.size()),
                         "linking " + info->digest.str());
      hot_.PutLink(HotIndex::Key(up.name(), repo, info->digest.str()), stored->bytes.size());
      out.manifest = std::move(stored);
      out.result = "hit";
    } else {
      auto fetched = GetManifestByDigest(up, repo, info->digest, &from_backing);
      if (!fetched.ok()) {
        if (fetched.status().code() == Code::kNotFound) RememberMissing(key);
        return fetched.status();
      }
      RC_ASSIGN_OR_RETURN(out.manifest, StoreManifest(up, repo, *fetched, from_backing));
      if (from_backing) out.result = "backing";
    }
    out.digest = info->digest;
    RC_RETURN_IF_ERROR(PutTag(up, repo, tag,
                              metadata::TagRecord{out.digest, out.manifest->media_type,
                                                  out.manifest->bytes.size(), now, now}));
    NoteAccess(key, up.name(), repo, tag);
    return out;
  }
  if (info.status().code() == Code::kNotFound) {
    RememberMissing(key);
    return info.status();
  }
  // Upstream down or rate-limited: what the fleet last stored under this tag, served stale.
  auto b = backing_->GetManifest(BackingRepository(up, repo), tag);
  if (!b.ok()) return info.status();
  RC_ASSIGN_OR_RETURN(out.manifest, StoreManifest(up, repo, *b, true));
  out.digest = b->info.digest;
  out.result = "stale";
  out.warning =
      "110 regcache \"Response is stale: upstream unavailable, served from the backing "
      "registry\"";
  // Never confirmed by the upstream: stale at once, so the next requests revalidate it.
  RC_RETURN_IF_ERROR(PutTag(
      up, repo, tag,
      metadata::TagRecord{out.digest, out.manifest->media_type, out.manifest->bytes.size(), now, 0},
      false));
  NoteAccess(key, up.name(), repo, tag);
  return out;
}

// ---- blobs ----------------------------------------------------------------------------------

Result<BlobLookup> PullThroughCache::LookupBlob(Upstream& up, const std::string& repo,
                                                const oci::Digest& digest, bool head,
                                                bool memory_only) {
  const std::string key = HotIndex::Key(up.name(), repo, digest.str());
  BlobLookup out;
  auto link = hot_.GetLink(key);
  if (!link) {
    if (memory_only) {
      out.state = LookupState::kNeedStore;
      return out;
    }
    RC_ASSIGN_OR_RETURN(link, meta_.Linked(up.name(), repo, digest));
    if (!link) {
      out.state = LookupState::kUnlinked;
      return out;
    }
    hot_.PutLink(key, *link);
  }
  std::optional<uint64_t> stored;
  // A HEAD is answered from the ledger without a stat(2) when it holds the blob. Should the
  // blob be evicted meanwhile, the GET that follows fetches it again: same bytes, same size.
  if (head && ledger_) stored = ledger_->SizeOf(digest);
  if (!stored) {
    RC_ASSIGN_OR_RETURN(stored, blobs_.Stat(digest));
  }
  if (stored) {
    out.state = LookupState::kHit;
    out.size = *stored;
    if (head) return out;
    auto fd = blobs_.Open(digest);
    if (fd.ok()) {
      if (ledger_) ledger_->Touched(digest);
      out.fd = *fd;
      return out;
    }
    if (fd.status().code() != Code::kNotFound) return fd.status();
  }
  out.state = LookupState::kCold;
  out.size = *link;
  return out;
}

Result<uint64_t> PullThroughCache::ConfirmBlob(Upstream& up, const std::string& repo,
                                               const oci::Digest& digest) {
  const std::string key = HotIndex::Key(up.name(), repo, digest.str());
  if (IsKnownMissing(key)) {
    metrics_.Request("blob", "negative", up.stats());
    return NotFound("blob unknown to upstream " + up.name() + " (remembered)");
  }
  auto size = up.Guarded([&] { return up.client().StatBlob(repo, digest); });
  if (!size.ok() && size.status().code() != Code::kNotFound && backing_) {
    // Upstream cannot say; the backing registry holding it in this repository can.
    auto b = backing_->StatBlob(BackingRepository(up, repo), digest);
    if (b.ok() && b->has_value()) size = b;
  }
  if (!size.ok()) return size.status();
  if (!*size) {
    RememberMissing(key);
    return NotFound("blob " + digest.str() + " is not in " + repo);
  }
  // Upstream's HEAD says the repository has it. Its Content-Length is only a hint for this
  // answer (a HEAD may omit or misstate it): the link records no size, and a download's size
  // always comes from the download itself.
  hot_.PutLink(key, 0);
  NoteDurableFailure(meta_.Link(up.name(), repo, digest, metadata::ContentKind::kBlob, 0),
                     "linking " + digest.str());
  return **size;
}

Result<int> PullThroughCache::OpenCommitted(const oci::Digest& digest) {
  return blobs_.Open(digest);
}

Result<BlobStart> PullThroughCache::StartFill(Upstream& up, const std::string& repo,
                                              const oci::Digest& digest) {
  // With a backing registry a fill may not need the upstream at all.
  if (!backing_) RC_RETURN_IF_ERROR(up.breaker().Check());
  // Fills are shared per upstream and digest: the bytes are verified against the digest, so any
  // repository of that upstream yields the same blob, and the size is upstream's own answer.
  const std::string key = up.name() + "|" + digest.str();
  BlobStart out;
  std::unique_ptr<storage::BlobWriter> writer;
  {
    std::lock_guard<std::mutex> lock(fills_mu_);
    if (auto it = fills_.find(key); it != fills_.end()) {
      out.fill = it->second;
      out.joined = true;
      return out;
    }
    // The fill may have committed between the caller's lookup and taking the lock.
    RC_ASSIGN_OR_RETURN(auto stored, blobs_.Stat(digest));
    if (stored) {
      RC_ASSIGN_OR_RETURN(out.fd, blobs_.Open(digest));
      out.size = *stored;
      return out;
    }
    RC_ASSIGN_OR_RETURN(writer, blobs_.Ingest(digest));
    int fd = ::open(writer->temp_path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return IoError("cannot open fill file " + writer->temp_path());
    out.fill = std::make_shared<Fill>(digest, repo, fd);
    fills_[key] = out.fill;
  }
  metrics_.fills_in_flight++;
  auto fill = out.fill;
  auto* w = writer.release();
  bool queued = up.fills().TrySubmit([this, &up, fill, key, w] {
    RunFill(up, fill, key, std::unique_ptr<storage::BlobWriter>(w));
  });
  if (!queued) {
    delete w;  // aborts the temp file
    {
      std::lock_guard<std::mutex> lock(fills_mu_);
      fills_.erase(key);
    }
    metrics_.fills_in_flight--;
    metrics_.Count("regcache_upstream_refused_total",
                   "upstream=\"" + up.name() + "\",reason=\"overload\"");
    Status busy = upstream::WithRetryAfter(
        Unavailable("too many downloads from upstream " + up.name() + " in progress"), 1);
    fill->Complete(busy);
    return busy;
  }
  return out;
}

std::vector<FillProgress> PullThroughCache::InFlightFills(size_t max) {
  std::vector<std::pair<std::string, std::shared_ptr<Fill>>> listed;
  {
    std::lock_guard<std::mutex> lock(fills_mu_);
    for (const auto& [key, fill] : fills_) {
      if (listed.size() == max) break;
      listed.emplace_back(key.substr(0, key.rfind('|')), fill);
    }
  }
  std::vector<FillProgress> out;
  out.reserve(listed.size());
  for (const auto& [upstream, fill] : listed) {
    auto state = fill->Snapshot();
    out.push_back(FillProgress{upstream, fill->repo(), fill->digest(), state.readable, state.size,
                               fill->memory()});
  }
  return out;
}

void PullThroughCache::RunFill(Upstream& up, std::shared_ptr<Fill> fill, std::string key,
                               std::unique_ptr<storage::BlobWriter> writer) {
  const oci::Digest& digest = fill->digest();
  uint64_t size = 0;
  bool memory = false;  // not stored: served from a window in memory, then gone
  bool reserved = false;
  bool listed = true;  // still in fills_, where new readers can join it
  auto unlist = [&] {
    std::lock_guard<std::mutex> lock(fills_mu_);
    auto it = fills_.find(key);
    if (it != fills_.end() && it->second == fill) fills_.erase(it);
    listed = false;
  };
  bool from_backing = false;
  auto on_size = [&](uint64_t n) -> Status {
    if (n > kMaxBlobBytes) return Integrity("announced a blob size larger than any blob");
    size = n;
    if (evictor_) {
      reserved = evictor_->Reserve(n);
      memory = !reserved;
    }
    if (!memory) {
      // Not enough free space on the file system for it, whatever the cap says: storage
      // is degraded until eviction (or the operator) makes room.
      auto space = blobs_.FilesystemSpace();
      memory = space.ok() && space->available < n + kFreeSpaceMargin;
    }
    if (memory) {
      // A miss this node cannot keep: it still serves, but it is not a full cache now.
      if (evictor_) evictor_->NoSpace();
      if (reserved) evictor_->Release(n);
      reserved = false;
      writer->Abort();
      fill->UseMemory(kPassThroughWindow);
    }
    fill->Start(n);
    return Status::Ok();
  };
  auto sink = [&](const char* data, size_t n) -> Status {
    if (!from_backing) metrics_.Fetched(up.stats(), n);
    if (memory) {
      RC_RETURN_IF_ERROR(fill->WriteMemory(data, n, kPassThroughStall));
      // Once the window has moved on, a newcomer could not start from byte 0.
      if (listed && fill->window_start() > 0) unlist();
      return Status::Ok();
    }
    RC_RETURN_IF_ERROR(writer->Write(data, n));
    fill->Progress(writer->written());
    return Status::Ok();
  };
  Status s = NotFound("no backing registry");
  // The backing registry first: a blob any node fetched costs no upstream request. Only a
  // failure before the first byte moves on to the upstream; after it, readers have had bytes
  // that only the same source can continue. A copy there that failed verification is skipped
  // (Backing::Distrusted) until the verified one this fill fetches replaced it.
  if (backing_ && !backing_->Distrusted(digest)) {
    bool started = false;
    from_backing = true;
    s = backing_->FetchBlob(
        BackingRepository(up, fill->repo()), digest,
        [&](uint64_t n) {
          started = true;
          return on_size(n);
        },
        sink);
    if (!s.ok() && !started) from_backing = false;
  }
  if (!from_backing) {
    s = up.Guarded([&] { return up.client().FetchBlob(fill->repo(), digest, on_size, sink); });
    if (!s.ok() && s.code() != Code::kIoError) s = s.WithOrigin(Origin::kUpstream);
  }
  if (storage::IsNoSpace(s) && evictor_) evictor_->NoSpace();
  if (s.ok() && !memory) {
    s = writer->Commit(size);
    if (storage::IsNoSpace(s) && evictor_) evictor_->NoSpace();
    if (s.ok() && ledger_) ledger_->Added(digest, size, false);
    if (s.ok() && evictor_) evictor_->Stored();
    if (s.ok() && backing_ && !from_backing) {
      backing_->Put(
          {metadata::ContentKind::kBlob, BackingRepository(up, fill->repo()), digest, ""});
    }
  } else if (!memory) {
    writer->Abort();
  }
  if (s.ok() && memory) {
    metrics_.passthrough++;
    spdlog::info("served {} ({}) without storing it: no room in the store", digest.str(),
                 HumanBytes(size));
  }
  if (reserved) evictor_->Release(size);
  if (!s.ok()) {
    spdlog::warn("fill of {} from {}/{} failed: {}", digest.str(), up.name(), fill->repo(),
                 s.ToString());
  }
  // Leave the map before waking readers: a reader that retries must start a new fill.
  if (listed) unlist();
  fill->Complete(s);
  metrics_.fills_in_flight--;
  auto rl = up.client().rate_limit();
  if (rl.remaining >= 0) metrics_.SetRateLimitRemaining(up.name(), rl.remaining);
}

// ---- pass-through endpoints -----------------------------------------------------------------

namespace {

RawResponse FromTagListRow(const metadata::TagListRecord& row, const char* result) {
  RawResponse r;
  r.status = row.status;
  r.body = row.body;
  r.content_type = row.content_type;
  r.link = row.link;
  r.result = result;
  return r;
}

}  // namespace

Result<RawResponse> PullThroughCache::Tags(Upstream& up, const std::string& repo,
                                           const std::string& query) {
  RC_ASSIGN_OR_RETURN(auto row, meta_.GetTagList(up.name(), repo, query));
  if (row && NowSeconds() - row->fetched_at < up.TtlFor(repo).count()) {
    return FromTagListRow(*row, "hit");
  }
  bool joined = false;
  auto r = tag_list_fetches_.Do(
      up.name() + "|" + repo + "|" + query, [&] { return FetchTagList(up, repo, query); }, &joined);
  if (joined && r.ok() && r->result == "miss") r->result = "coalesced";
  return r;
}

Result<RawResponse> PullThroughCache::FetchTagList(Upstream& up, const std::string& repo,
                                                   const std::string& query) {
  // Whoever held this key before us may have stored the page.
  RC_ASSIGN_OR_RETURN(auto row, meta_.GetTagList(up.name(), repo, query));
  const int64_t now = NowSeconds();
  if (row && now - row->fetched_at < up.TtlFor(repo).count()) return FromTagListRow(*row, "hit");
  auto resp = RawCall(up, repo, "tags/list" + query);
  if (!resp.ok()) {
    if (!row) return resp.status();
    spdlog::warn("serving stale tag list of {}/{} ({})", up.name(), repo, resp.status().ToString());
    RawResponse r = FromTagListRow(*row, "stale");
    r.warning = "110 regcache \"Response is stale: upstream " +
                std::string(CodeName(resp.status().code())) + "\"";
    return r;
  }
  RawResponse r;
  r.status = resp->status;
  r.body = std::move(resp->body);
  r.content_type = resp->headers.Get("Content-Type");
  r.link = resp->headers.Get("Link");
  r.result = "miss";
  if (r.status == 200) {
    Status s =
        meta_.PutTagList(up.name(), repo, query,
                         metadata::TagListRecord{r.status, r.body, r.content_type, r.link, now});
    if (!s.ok()) spdlog::warn("caching tag list of {}/{}: {}", up.name(), repo, s.ToString());
  }
  return r;
}

Result<RawResponse> PullThroughCache::Referrers(Upstream& up, const std::string& repo,
                                                const oci::Digest& digest,
                                                const std::string& query) {
  // An upstream 404 passes through: it tells clients the referrers API is not there, so they
  // fall back to the tag schema (sha256-<hex>), where cosign and others store signatures.
  RC_ASSIGN_OR_RETURN(auto resp, RawCall(up, repo, "referrers/" + digest.str() + query));
  RawResponse r;
  r.status = resp.status;
  r.body = std::move(resp.body);
  r.content_type = resp.headers.Get("Content-Type");
  r.filters_applied = resp.headers.Get("OCI-Filters-Applied");
  r.result = "pass";
  return r;
}

}  // namespace regcache::cache
