#include "cache/pull_through.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>

#include "oci/manifest.h"

namespace regcache::cache {

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

PullThroughCache::PullThroughCache(storage::BlobStore& blobs, metadata::MetadataStore& meta,
                                   Metrics& metrics, TaskRunner run_fill)
    : blobs_(blobs), meta_(meta), metrics_(metrics), run_fill_(std::move(run_fill)) {}

std::shared_ptr<std::mutex> PullThroughCache::KeyLock(const std::string& key) {
  std::lock_guard<std::mutex> lock(keys_mu_);
  auto& weak = key_locks_[key];
  auto m = weak.lock();
  if (!m) {
    m = std::make_shared<std::mutex>();
    weak = m;
  }
  if (key_locks_.size() > 4096) {
    for (auto it = key_locks_.begin(); it != key_locks_.end();) {
      it = it->second.expired() ? key_locks_.erase(it) : std::next(it);
    }
  }
  return m;
}

void PullThroughCache::NoteAccess(const std::string& upstream, const std::string& repo,
                                  const std::string& tag) {
  const int64_t now = NowSeconds();
  const std::string key = upstream + "|" + repo + "|" + tag;
  {
    std::lock_guard<std::mutex> lock(access_mu_);
    auto& last = access_written_[key];
    if (now - last < 60) return;
    last = now;
    if (access_written_.size() > 100000) access_written_.clear();
  }
  Status s = meta_.TouchTagAccessed(upstream, repo, tag, now);
  if (!s.ok()) spdlog::warn("recording access of {}/{}:{}: {}", upstream, repo, tag, s.ToString());
}

Result<ManifestResponse> PullThroughCache::ServeStored(const oci::Digest& digest, bool head) {
  RC_ASSIGN_OR_RETURN(auto media_type, meta_.GetManifestType(digest));
  if (!media_type) return NotFound("manifest " + digest.str() + " has no recorded media type");
  ManifestResponse r;
  r.digest = digest;
  r.media_type = *media_type;
  if (head) {
    RC_ASSIGN_OR_RETURN(auto size, blobs_.Stat(digest));
    if (!size) return NotFound("manifest " + digest.str() + " is not stored");
    r.size = *size;
  } else {
    RC_ASSIGN_OR_RETURN(r.bytes, blobs_.ReadAll(digest, oci::kMaxManifestBytes));
    r.size = r.bytes.size();
  }
  return r;
}

Status PullThroughCache::StoreManifest(Upstream& up, const std::string& repo,
                                       const upstream::FetchedManifest& m,
                                       std::string* media_type) {
  auto parsed = oci::ParseManifest(m.bytes, m.info.media_type);
  if (!parsed.ok()) return parsed.status().WithContext("upstream manifest " + m.info.digest.str());
  // Served with the Content-Type it arrived with, when that names a manifest type.
  *media_type =
      oci::IsManifestMediaType(m.info.media_type) ? m.info.media_type : parsed->media_type;
  RC_RETURN_IF_ERROR(blobs_.PutSmall(m.info.digest, m.bytes));
  RC_RETURN_IF_ERROR(meta_.PutManifestType(m.info.digest, *media_type));
  metrics_.bytes_fetched += m.bytes.size();
  const std::string& name = up.name();
  RC_RETURN_IF_ERROR(
      meta_.Link(name, repo, m.info.digest, metadata::ContentKind::kManifest, m.bytes.size()));
  // What this manifest references is, by construction, in this repository upstream.
  for (const auto& d : parsed->manifests) {
    RC_RETURN_IF_ERROR(meta_.Link(name, repo, d.digest, metadata::ContentKind::kManifest, d.size));
  }
  for (const auto& d : parsed->Blobs()) {
    RC_RETURN_IF_ERROR(meta_.Link(name, repo, d.digest, metadata::ContentKind::kBlob, d.size));
  }
  return Status::Ok();
}

Result<ManifestResponse> PullThroughCache::GetManifest(Upstream& up, const std::string& repo,
                                                       const std::string& reference, bool head) {
  const std::string& name = up.name();
  auto& client = up.client();
  const bool by_digest = reference.find(':') != std::string::npos;

  if (by_digest) {
    RC_ASSIGN_OR_RETURN(oci::Digest d, oci::Digest::Parse(reference));
    auto served = [&](const char* result) -> Result<ManifestResponse> {
      auto r = ServeStored(d, head);
      if (r.ok()) r->result = result;
      return r;
    };
    RC_ASSIGN_OR_RETURN(auto stored, blobs_.Stat(d));
    RC_ASSIGN_OR_RETURN(auto linked, meta_.Linked(name, repo, d));
    if (stored && linked) return served("hit");  // content by digest is immutable
    auto key = KeyLock(name + "|" + repo + "|" + reference);
    std::lock_guard<std::mutex> lock(*key);
    RC_ASSIGN_OR_RETURN(stored, blobs_.Stat(d));
    RC_ASSIGN_OR_RETURN(linked, meta_.Linked(name, repo, d));
    if (stored && linked) return served("coalesced");
    if (stored) {
      // Stored through another repository: serve it here only once upstream confirms.
      RC_ASSIGN_OR_RETURN(auto info, client.HeadManifest(repo, reference));
      if (!(info.digest == d)) return NotFound("upstream answered with another digest");
      RC_RETURN_IF_ERROR(meta_.Link(name, repo, d, metadata::ContentKind::kManifest, info.size));
      return served("hit");
    }
    RC_ASSIGN_OR_RETURN(auto fetched, client.GetManifest(repo, reference));
    std::string media_type;
    RC_RETURN_IF_ERROR(StoreManifest(up, repo, fetched, &media_type));
    return served("miss");
  }

  const int64_t ttl = up.TtlFor(repo).count();
  auto fresh = [&](const std::optional<metadata::TagRecord>& row) -> Result<bool> {
    if (!row || NowSeconds() - row->checked_at >= ttl) return false;
    RC_ASSIGN_OR_RETURN(auto stored, blobs_.Stat(row->digest));
    return stored.has_value();
  };
  auto serve_row = [&](const metadata::TagRecord& row,
                       const char* result) -> Result<ManifestResponse> {
    auto r = ServeStored(row.digest, head);
    if (r.ok()) {
      r->result = result;
      NoteAccess(name, repo, reference);
    }
    return r;
  };

  RC_ASSIGN_OR_RETURN(auto row, meta_.GetTag(name, repo, reference));
  RC_ASSIGN_OR_RETURN(bool is_fresh, fresh(row));
  if (is_fresh) return serve_row(*row, "hit");

  // One upstream conversation per tag at a time; whoever waited here finds the answer cached.
  auto key = KeyLock(name + "|" + repo + "|" + reference);
  std::lock_guard<std::mutex> lock(*key);
  RC_ASSIGN_OR_RETURN(auto row2, meta_.GetTag(name, repo, reference));
  RC_ASSIGN_OR_RETURN(is_fresh, fresh(row2));
  if (is_fresh) return serve_row(*row2, "coalesced");

  bool have_stale = false;
  if (row2) {
    RC_ASSIGN_OR_RETURN(auto stored, blobs_.Stat(row2->digest));
    have_stale = stored.has_value();
  }
  auto serve_stale = [&](const Status& why) -> Result<ManifestResponse> {
    spdlog::warn("serving stale {}/{}:{} ({})", name, repo, reference, why.ToString());
    auto r = serve_row(*row2, "stale");
    if (r.ok())
      r->warning =
          "110 regcache \"Response is stale: upstream " + std::string(CodeName(why.code())) + "\"";
    return r;
  };

  if (have_stale) {
    // Revalidate with a HEAD: it costs no Docker Hub pull.
    auto info = client.HeadManifest(repo, reference);
    if (info.ok() && info->digest == row2->digest) {
      RC_RETURN_IF_ERROR(meta_.TouchTagChecked(name, repo, reference, NowSeconds()));
      return serve_row(*row2, "revalidated");
    }
    if (!info.ok()) {
      if (info.status().code() == Code::kNotFound) return info.status();
      return serve_stale(info.status());
    }
    // The tag moved: fetch the new manifest by the digest the HEAD reported.
    auto fetched = client.GetManifest(repo, info->digest.str());
    if (!fetched.ok()) return serve_stale(fetched.status());
    std::string media_type;
    RC_RETURN_IF_ERROR(StoreManifest(up, repo, *fetched, &media_type));
    metadata::TagRecord rec{fetched->info.digest, media_type, fetched->bytes.size(), NowSeconds(),
                            NowSeconds()};
    RC_RETURN_IF_ERROR(meta_.PutTag(name, repo, reference, rec));
    return serve_row(rec, "miss");
  }

  RC_ASSIGN_OR_RETURN(auto fetched, client.GetManifest(repo, reference));
  std::string media_type;
  RC_RETURN_IF_ERROR(StoreManifest(up, repo, fetched, &media_type));
  metadata::TagRecord rec{fetched.info.digest, media_type, fetched.bytes.size(), NowSeconds(),
                          NowSeconds()};
  RC_RETURN_IF_ERROR(meta_.PutTag(name, repo, reference, rec));
  return serve_row(rec, "miss");
}

Result<BlobResponse> PullThroughCache::OpenBlob(Upstream& up, const std::string& repo,
                                                const oci::Digest& digest, bool head) {
  const std::string& name = up.name();
  BlobResponse r;
  RC_ASSIGN_OR_RETURN(auto linked, meta_.Linked(name, repo, digest));
  if (linked) {
    r.size = *linked;
  } else {
    // Unknown in this repository: only upstream can say it is there.
    RC_ASSIGN_OR_RETURN(auto size, up.client().StatBlob(repo, digest));
    if (!size) return NotFound("blob " + digest.str() + " is not in " + repo);
    RC_RETURN_IF_ERROR(meta_.Link(name, repo, digest, metadata::ContentKind::kBlob, *size));
    r.size = *size;
  }
  RC_ASSIGN_OR_RETURN(auto stored, blobs_.Stat(digest));
  if (stored) {
    r.size = *stored;
    r.result = "hit";
    if (!head) {
      RC_ASSIGN_OR_RETURN(r.fd, blobs_.Open(digest));
    }
    return r;
  }
  if (head) {
    r.result = "miss";
    return r;
  }

  std::unique_ptr<storage::BlobWriter> writer;
  {
    std::lock_guard<std::mutex> lock(fills_mu_);
    auto it = fills_.find(digest.str());
    if (it != fills_.end()) {
      r.fill = it->second;
      r.size = r.fill->size();
      r.result = "coalesced";
      return r;
    }
    // The fill may have committed between the Stat above and taking the lock.
    RC_ASSIGN_OR_RETURN(stored, blobs_.Stat(digest));
    if (!stored) {
      RC_ASSIGN_OR_RETURN(writer, blobs_.Ingest(digest));
      int fd = ::open(writer->temp_path().c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) return IoError("cannot open fill file " + writer->temp_path());
      r.fill = std::make_shared<Fill>(digest, r.size, fd);
      fills_[digest.str()] = r.fill;
    }
  }
  if (stored) {
    r.size = *stored;
    r.result = "hit";
    RC_ASSIGN_OR_RETURN(r.fd, blobs_.Open(digest));
    return r;
  }
  r.result = "miss";
  metrics_.fills_in_flight++;
  auto fill = r.fill;
  auto* w = writer.release();
  run_fill_([this, &up, repo, fill, w] {
    RunFill(up, repo, fill, std::unique_ptr<storage::BlobWriter>(w));
  });
  return r;
}

void PullThroughCache::RunFill(Upstream& up, std::string repo, std::shared_ptr<Fill> fill,
                               std::unique_ptr<storage::BlobWriter> writer) {
  oci::Descriptor desc;
  desc.digest = fill->digest();
  desc.size = fill->size();
  Status s = up.client().GetBlob(repo, desc, [&](const char* data, size_t n) -> Status {
    RC_RETURN_IF_ERROR(writer->Write(data, n));
    metrics_.bytes_fetched += n;
    fill->Progress(writer->written());
    return Status::Ok();
  });
  if (s.ok()) {
    s = writer->Commit(desc.size);
  } else {
    writer->Abort();
  }
  if (!s.ok()) {
    spdlog::warn("fill of {} from {}/{} failed: {}", desc.digest.str(), up.name(), repo,
                 s.ToString());
  }
  fill->Complete(s);
  {
    std::lock_guard<std::mutex> lock(fills_mu_);
    auto it = fills_.find(desc.digest.str());
    if (it != fills_.end() && it->second == fill) fills_.erase(it);
  }
  metrics_.fills_in_flight--;
  auto rl = up.client().rate_limit();
  if (rl.remaining >= 0) metrics_.SetRateLimitRemaining(up.name(), rl.remaining);
}

namespace {
RawResponse PassThrough(upstream::HttpResponse resp) {
  RawResponse r;
  r.status = resp.status;
  r.body = std::move(resp.body);
  r.content_type = resp.headers.Get("Content-Type");
  r.link = resp.headers.Get("Link");
  return r;
}
}  // namespace

Result<RawResponse> PullThroughCache::Tags(Upstream& up, const std::string& repo,
                                           const std::string& query) {
  RC_ASSIGN_OR_RETURN(auto resp, up.client().GetRaw(repo, "tags/list" + query));
  return PassThrough(std::move(resp));
}

Result<RawResponse> PullThroughCache::Referrers(Upstream& up, const std::string& repo,
                                                const oci::Digest& digest,
                                                const std::string& query) {
  RC_ASSIGN_OR_RETURN(auto resp, up.client().GetRaw(repo, "referrers/" + digest.str() + query));
  if (resp.status == 404) {
    RawResponse r;
    // Referrers, once supported, are never a 404: no referrers is an empty index.
    r.status = 200;
    r.content_type = std::string(oci::kOciIndex);
    r.body =
        R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]})";
    return r;
  }
  return PassThrough(std::move(resp));
}

}  // namespace regcache::cache
