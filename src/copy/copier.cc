#include "copy/copier.h"

#include <mutex>
#include <set>
#include <thread>

#include "copy/blob_pipe.h"

namespace regcache::copy {

struct Copier::Plan {
  struct PendingManifest {
    oci::Digest digest;
    std::string media_type;
    std::string bytes;
  };
  std::vector<PendingManifest> manifests;  // children, deepest first
  std::vector<oci::Descriptor> blobs;      // unique, in discovery order
  std::set<std::string> seen_blobs;
  std::set<std::string> seen_manifests;
  int present = 0;

  void AddBlobs(const oci::Manifest& m) {
    for (const auto& b : m.Blobs()) {
      if (seen_blobs.insert(b.digest.str()).second) blobs.push_back(b);
    }
  }
};

namespace {

// PUTs a manifest whose bytes were verified against their digest here. A destination that still
// answers DIGEST_INVALID lost a race with a concurrent push of the same manifest (CNCF
// distribution's filesystem driver rewrites the stored file in place, so a concurrent check can
// read it half-written): the same PUT is tried again, briefly.
Status PutVerifiedManifest(upstream::RegistryClient& dst, const std::string& repo,
                           const std::string& ref, const std::string& media_type,
                           const std::string& bytes) {
  Status s = dst.PutManifest(repo, ref, media_type, bytes);
  for (int retry = 1; retry <= 3 && s.code() == Code::kIntegrity; ++retry) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100 * retry));
    s = dst.PutManifest(repo, ref, media_type, bytes);
  }
  return s;
}


constexpr int kMaxIndexDepth = 4;
constexpr int kBlobAttempts = 3;

std::string MediaTypeOf(const upstream::FetchedManifest& m, const std::string& fallback) {
  return m.info.media_type.empty() ? fallback : m.info.media_type;
}

std::string PlatformList(const std::vector<oci::Descriptor>& ds) {
  std::string s;
  for (const auto& d : ds) {
    if (!d.platform) continue;
    if (!s.empty()) s += ", ";
    s += d.platform->String();
  }
  return s.empty() ? "none" : s;
}

}  // namespace

Copier::Copier(upstream::RegistryClient& source, upstream::RegistryClient& destination,
               EnsureOptions options)
    : src_(source), dst_(destination), options_(std::move(options)) {}

void Copier::ReportProgress(uint64_t blobs_delta, uint64_t bytes_delta) {
  if (!options_.on_progress) return;
  CopyProgress snapshot;
  {
    std::lock_guard<std::mutex> lock(progress_mu_);
    progress_.blobs_done += blobs_delta;
    progress_.bytes_done += bytes_delta;
    snapshot = progress_;
  }
  options_.on_progress(snapshot);
}

Status Copier::PlanManifest(const oci::Reference& src, const oci::Reference& dst,
                            const oci::Descriptor& desc, Plan& plan, int depth) {
  if (depth > kMaxIndexDepth) return InvalidArgument("indexes nested deeper than 4 levels");
  if (!plan.seen_manifests.insert(desc.digest.str()).second) return Status::Ok();
  // A manifest the destination already has is complete there (registries check references on
  // push), so neither it nor anything below it needs to move, and the source is not asked.
  auto have = dst_.HeadManifest(dst.repository, desc.digest.str());
  if (have.ok()) {
    ++plan.present;
    return Status::Ok();
  }
  if (have.status().code() != Code::kNotFound) {
    return have.status().WithContext("checking destination for " + desc.digest.str());
  }
  RC_ASSIGN_OR_RETURN(upstream::FetchedManifest fetched,
                      src_.GetManifest(src.repository, desc.digest.str()));
  std::string media_type = MediaTypeOf(fetched, desc.media_type);
  auto parsed = oci::ParseManifest(fetched.bytes, media_type);
  if (!parsed.ok()) return parsed.status().WithContext("manifest " + desc.digest.str());
  if (parsed->is_index) {
    for (const auto& child : parsed->manifests) {
      RC_RETURN_IF_ERROR(PlanManifest(src, dst, child, plan, depth + 1));
    }
  } else {
    plan.AddBlobs(*parsed);
  }
  plan.manifests.push_back({desc.digest, parsed->media_type, std::move(fetched.bytes)});
  return Status::Ok();
}

Result<EnsureResult> Copier::Ensure(const oci::Reference& src, const oci::Reference& dst) {
  EnsureResult res;
  res.source = src;
  res.destination = dst;
  auto finish = [&]() -> Result<EnsureResult> {
    res.source_rate_limit = src_.rate_limit();
    res.source_requests = src_.stats();
    return res;
  };
  const std::string dst_ident = dst.Identifier();

  // 1. Does the destination already have it? A HEAD at the destination, nothing at the source.
  auto head = dst_.HeadManifest(dst.repository, dst_ident);
  if (head.ok()) {
    res.destination_digest = head->digest;
    if (!options_.check_upstream) {
      res.reason = "present";
      return finish();
    }
    if (options_.platforms.empty()) {
      // HEADs cost no Docker Hub quota.
      auto src_head = src_.HeadManifest(src.repository, src.Identifier());
      if (!src_head.ok()) return src_head.status().WithContext("checking source " + src.String());
      res.source_digest = src_head->digest;
      if (src_head->digest == head->digest) {
        res.reason = "present (source unchanged)";
        return finish();
      }
    }
    res.reason = "tag moved";
  } else if (head.status().code() != Code::kNotFound) {
    return head.status().WithContext("checking destination " + dst.String());
  } else {
    res.reason = "missing";
  }
  if (options_.dry_run && (options_.platforms.empty() || !head.ok())) {
    res.would_copy = true;
    return finish();
  }

  // 2. Can the destination take pushes into this repository? ECR answers NAME_UNKNOWN for a
  // repository that was never created; find out before spending source pulls on manifests.
  if (!head.ok()) {
    auto probe = dst_.StartUpload(dst.repository, oci::Digest::Of(""), "");
    if (!probe.ok()) return probe.status().WithContext("destination " + dst.String());
    dst_.CancelUpload(*probe);
  }

  // 3. Fetch the source's top manifest and decide what the destination will hold.
  auto top = src_.GetManifest(src.repository, src.Identifier());
  if (!top.ok()) return top.status().WithContext("reading source " + src.String());
  res.source_digest = top->info.digest;
  std::string top_media = MediaTypeOf(*top, "");
  auto parsed = oci::ParseManifest(top->bytes, top_media);
  if (!parsed.ok()) return parsed.status().WithContext("source manifest " + src.String());
  top_media = parsed->media_type;
  std::string top_bytes = top->bytes;

  Plan plan;
  if (parsed->is_index) {
    std::vector<oci::Descriptor> children = parsed->manifests;
    if (!options_.platforms.empty()) {
      std::vector<oci::Descriptor> kept;
      for (const auto& c : children) {
        for (const auto& want : options_.platforms) {
          if (c.platform && c.platform->Matches(want)) {
            kept.push_back(c);
            break;
          }
        }
      }
      if (kept.empty()) {
        return NotFound(src.String() +
                        " has none of the requested platforms; it has: " + PlatformList(children));
      }
      children = kept;
      if (children.size() == 1) {
        // One platform: the destination gets that platform's own manifest, unchanged.
        auto child = src_.GetManifest(src.repository, children[0].digest.str());
        if (!child.ok()) return child.status();
        top_media = MediaTypeOf(*child, children[0].media_type);
        auto cp = oci::ParseManifest(child->bytes, top_media);
        if (!cp.ok()) return cp.status().WithContext("manifest " + children[0].digest.str());
        if (cp->is_index) return Unsupported("platform entry is itself an index");
        top_media = cp->media_type;
        top_bytes = std::move(child->bytes);
        children.clear();
        plan.AddBlobs(*cp);
      } else {
        std::vector<oci::Digest> keep;
        for (const auto& c : children) keep.push_back(c.digest);
        RC_ASSIGN_OR_RETURN(top_bytes, oci::FilterIndex(top->bytes, top_media, keep));
      }
    }
    for (const auto& c : children) RC_RETURN_IF_ERROR(PlanManifest(src, dst, c, plan, 1));
  } else {
    plan.AddBlobs(*parsed);
  }
  const oci::Digest top_digest = oci::Digest::Of(top_bytes);
  if (dst.digest && !(*dst.digest == top_digest)) {
    return InvalidArgument("destination names digest " + dst.digest->str() + " but the copy is " +
                           top_digest.str());
  }
  if (head.ok() && head->digest == top_digest) {
    res.reason = "present (source unchanged)";
    return finish();
  }
  if (options_.dry_run) {
    res.would_copy = true;
    return finish();
  }

  // 4. Blobs, then child manifests by digest, then the tag: the tag is the last write.
  RC_RETURN_IF_ERROR(CopyBlobs(src, dst, plan.blobs, res));
  res.manifests_present = plan.present;
  for (const auto& m : plan.manifests) {
    Status s = PutVerifiedManifest(dst_, dst.repository, m.digest.str(), m.media_type, m.bytes);
    if (!s.ok()) return s.WithContext("pushing manifest " + m.digest.str());
    ++res.manifests_pushed;
  }
  Status tagged = PutVerifiedManifest(dst_, dst.repository, dst_ident, top_media, top_bytes);
  if (!tagged.ok()) {
    // A concurrent ensure may have tagged the same content first (and an immutable repository
    // then refuses ours): what matters is where the tag points now.
    auto now = dst_.HeadManifest(dst.repository, dst_ident);
    if (!now.ok() || !(now->digest == top_digest)) {
      if (tagged.code() == Code::kAlreadyExists && now.ok()) {
        return Status(Code::kAlreadyExists, "destination tag " + dst.String() +
                                                " is immutable and points to " + now->digest.str() +
                                                ", not " + top_digest.str());
      }
      return tagged.WithContext("tagging " + dst.String());
    }
  } else {
    ++res.manifests_pushed;
  }
  res.destination_digest = top_digest;
  res.copied = true;
  return finish();
}

Status Copier::CopyBlobs(const oci::Reference& src, const oci::Reference& dst,
                         const std::vector<oci::Descriptor>& blobs, EnsureResult& result) {
  {
    std::lock_guard<std::mutex> lock(progress_mu_);
    progress_ = CopyProgress{};
    progress_.blobs_total = blobs.size();
    for (const auto& b : blobs) progress_.bytes_total += b.size;
  }
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  Status first_error;
  auto worker = [&] {
    while (!failed.load()) {
      size_t i = next.fetch_add(1);
      if (i >= blobs.size()) return;
      Status s = CopyOneBlob(src, dst, blobs[i], result);
      if (!s.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        if (first_error.ok()) first_error = s.WithContext("blob " + blobs[i].digest.str());
        failed = true;
      }
    }
  };
  const size_t n = std::min<size_t>(std::max(1, options_.parallel_blobs), blobs.size());
  std::vector<std::thread> threads;
  for (size_t i = 1; i < n; ++i) threads.emplace_back(worker);
  if (n > 0) worker();
  for (auto& t : threads) t.join();
  return first_error;
}

Status Copier::CopyOneBlob(const oci::Reference& src, const oci::Reference& dst,
                           const oci::Descriptor& blob, EnsureResult& result) {
  auto have = dst_.StatBlob(dst.repository, blob.digest);
  if (!have.ok()) return have.status().WithContext("checking destination");
  if (have->has_value()) {
    {
      std::lock_guard<std::mutex> lock(result_mu_);
      ++result.blobs_skipped;
    }
    ReportProgress(1, 0);
    return Status::Ok();
  }
  const bool same_registry = src_.registry() == dst_.registry() && src.repository != dst.repository;
  upstream::UploadMode mode = upstream::UploadMode::kMonolithic;
  Status last;
  for (int attempt = 1; attempt <= kBlobAttempts; ++attempt) {
    auto target = dst_.StartUpload(dst.repository, blob.digest,
                                   same_registry && attempt == 1 ? src.repository : "");
    if (!target.ok()) return target.status();
    if (target->mounted) {
      {
        std::lock_guard<std::mutex> lock(result_mu_);
        ++result.blobs_mounted;
      }
      ReportProgress(1, 0);
      return Status::Ok();
    }
    BlobPipe pipe(options_.pipe_bytes, blob.size);
    Status produced;
    std::thread producer([&] {
      produced = src_.GetBlob(src.repository, blob, [&](const char* data, size_t n) {
        Status s = pipe.Write(data, n);
        if (s.ok()) ReportProgress(0, n);
        return s;
      });
      pipe.Finish(produced);
    });
    Status consumed = dst_.CompleteUpload(
        dst.repository, *target, blob.digest, blob.size,
        [&](char* buf, size_t max) { return pipe.Read(buf, max); }, mode);
    if (!consumed.ok()) pipe.Cancel(consumed);
    producer.join();
    if (produced.ok() && consumed.ok()) {
      std::lock_guard<std::mutex> lock(result_mu_);
      ++result.blobs_copied;
      result.bytes_copied += blob.size;
      ReportProgress(1, 0);
      return Status::Ok();
    }
    dst_.CancelUpload(*target);
    // The download already retried and resumed on its own; its failure is final.
    if (!produced.ok() && produced.code() != Code::kAborted) return produced;
    last = consumed;
    if (consumed.code() == Code::kUnsupported && mode == upstream::UploadMode::kMonolithic) {
      mode = upstream::UploadMode::kChunked;
      continue;
    }
    if (consumed.code() != Code::kUnavailable && consumed.code() != Code::kRateLimited) {
      return consumed;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200 * attempt));
  }
  return last;
}

}  // namespace regcache::copy
