#include "cache/backing.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "oci/manifest.h"
#include "oci/mirror.h"

namespace regcache::cache {
namespace {

constexpr size_t kMaxKnown = 200000;
constexpr size_t kMaxDistrusted = 10000;

// What a work item is, for logs.
std::string Describe(const metadata::BackingWork& w) {
  if (w.kind == metadata::ContentKind::kBlob) return "blob " + w.target + "@" + w.digest.str();
  if (!w.tag.empty()) return "tag " + w.target + ":" + w.tag;
  return "manifest " + w.target + "@" + w.digest.str();
}

}  // namespace

Backing::Backing(std::unique_ptr<upstream::RegistryClient> reader,
                 std::unique_ptr<upstream::RegistryClient> writer, BackingOptions options,
                 metadata::MetadataStore& meta, storage::BlobStore& blobs, Metrics& metrics)
    : reader_(std::move(reader)),
      writer_(std::move(writer)),
      options_(std::move(options)),
      meta_(meta),
      blobs_(blobs),
      metrics_(metrics),
      breaker_("backing", options_.breaker) {}

Backing::~Backing() { Shutdown(); }

std::string Backing::Repository(const std::string& registry, const std::string& repository) const {
  return oci::MirrorRepository(options_.prefix, registry, repository);
}

const std::string& Backing::registry() const { return reader_->registry(); }

// ---- read side ------------------------------------------------------------------------------

Result<upstream::FetchedManifest> Backing::GetManifest(const std::string& target,
                                                       const std::string& reference) {
  Status admitted = breaker_.Admit();
  if (!admitted.ok()) return admitted.WithOrigin(Origin::kBacking);
  auto r = reader_->GetManifest(target, reference);
  const bool corrupt = r.status().code() == Code::kIntegrity;
  // A copy that does not hash to its name is the backing registry's failure, as much as a
  // timeout is (the breaker counts the answer as one); the caller asks the upstream instead.
  breaker_.Record(corrupt ? Unavailable("sent a corrupt manifest") : r.status());
  metrics_.Count("regcache_backing_requests_total",
                 std::string("kind=\"manifest\",result=\"") +
                     (r.ok()                                 ? "hit"
                      : r.status().code() == Code::kNotFound ? "miss"
                      : corrupt                              ? "corrupt"
                                                             : "error") +
                     "\"");
  if (corrupt) {
    spdlog::error("backing registry {}: manifest {}@{} does not match its digest: {}", registry(),
                  target, reference, r.status().message());
  }
  if (!r.ok()) return r.status().WithOrigin(Origin::kBacking);
  NotePresent(target, r->info.digest);
  return r;
}

Result<std::optional<uint64_t>> Backing::StatBlob(const std::string& target,
                                                  const oci::Digest& digest) {
  auto r = breaker_.Guard([&] { return reader_->StatBlob(target, digest); });
  if (r.ok() && r->has_value()) NotePresent(target, digest);
  return r;
}

Status Backing::FetchBlob(const std::string& target, const oci::Digest& digest,
                          const std::function<Status(uint64_t)>& on_size,
                          const std::function<Status(const char*, size_t)>& sink) {
  Status admitted = breaker_.Admit();
  if (!admitted.ok()) return admitted.WithOrigin(Origin::kBacking);
  bool started = false;
  Status s = reader_->FetchBlob(
      target, digest,
      [&](uint64_t n) {
        started = true;
        return on_size(n);
      },
      sink);
  const bool corrupt = s.code() == Code::kIntegrity;
  breaker_.Record(corrupt ? Unavailable("sent a corrupt blob") : s);
  const char* result = s.ok()                                      ? "hit"
                       : (!started && s.code() == Code::kNotFound) ? "miss"
                       : corrupt                                   ? "corrupt"
                                                                   : "error";
  metrics_.Count("regcache_backing_requests_total",
                 std::string("kind=\"blob\",result=\"") + result + "\"");
  if (s.ok()) {
    NotePresent(target, digest);
    return s;
  }
  if (corrupt) Distrust(target, digest, s);
  // Local failures (the sink's: disk full) stay the caller's own.
  if (s.code() == Code::kIoError) return s;
  return s.WithContext("backing registry " + registry()).WithOrigin(Origin::kBacking);
}

bool Backing::Distrusted(const oci::Digest& digest) {
  std::lock_guard<std::mutex> lock(known_mu_);
  if (distrusted_.empty()) return false;
  auto it = distrusted_.find(digest.str());
  if (it == distrusted_.end()) return false;
  if (std::chrono::steady_clock::now() < it->second) return true;
  distrusted_.erase(it);
  return false;
}

void Backing::Distrust(const std::string& target, const oci::Digest& digest, const Status& why) {
  spdlog::error(
      "backing registry {}: blob {}@{} failed verification ({}); fills of it go to the upstream, "
      "and the verified copy is written back",
      registry(), target, digest.str(), why.message());
  std::lock_guard<std::mutex> lock(known_mu_);
  if (distrusted_.size() >= kMaxDistrusted) distrusted_.clear();
  distrusted_[digest.str()] = std::chrono::steady_clock::now() + kDistrustFor;
  // Content-addressed: the copy is bad wherever the backing registry links it, so it is neither
  // "present" here nor a place to mount from.
  present_.erase(target + "|" + digest.str());
  if (auto home = blob_home_.find(digest.str()); home != blob_home_.end()) blob_home_.erase(home);
}

void Backing::Trust(const oci::Digest& digest) {
  std::lock_guard<std::mutex> lock(known_mu_);
  distrusted_.erase(digest.str());
}

// ---- write side -----------------------------------------------------------------------------

std::string Backing::KeyOf(const metadata::BackingWork& w) {
  return std::to_string(static_cast<int>(w.kind)) + "|" + w.target + "|" + w.digest.str() + "|" +
         w.tag;
}

void Backing::NotePresent(const std::string& target, const oci::Digest& digest) {
  std::lock_guard<std::mutex> lock(known_mu_);
  if (present_.size() >= kMaxKnown) present_.clear();
  present_.insert(target + "|" + digest.str());
}

bool Backing::IsPresent(const std::string& target, const oci::Digest& digest) {
  std::lock_guard<std::mutex> lock(known_mu_);
  return present_.count(target + "|" + digest.str()) > 0;
}

void Backing::MarkPresent(const std::string& target, const oci::Digest& digest, bool blob) {
  NotePresent(target, digest);
  if (!blob) return;
  std::lock_guard<std::mutex> lock(known_mu_);
  if (blob_home_.size() >= kMaxKnown) blob_home_.clear();
  blob_home_.emplace(digest.str(), target);
}

void Backing::Put(const metadata::BackingWork& work) {
  if (work.kind == metadata::ContentKind::kBlob || work.tag.empty()) {
    if (IsPresent(work.target, work.digest)) return;
  }
  Enqueue(Item{work, 0}, true);
}

void Backing::Enqueue(Item item, bool record) {
  const std::string key = KeyOf(item.work);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && record) return;
    if (queued_keys_.count(key)) return;
    if (queued_keys_.size() >= options_.max_queue) {
      metrics_.Count("regcache_backing_failures_total", "reason=\"queue_full\"");
      spdlog::warn("backing: queue full ({} items), not copying {}", options_.max_queue,
                   Describe(item.work));
      return;
    }
    queued_keys_.insert(key);
  }
  if (record) {
    Status s = meta_.AddBackingWork(item.work);
    if (!s.ok()) spdlog::warn("backing: recording {}: {}", Describe(item.work), s.ToString());
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    ready_.push_back(std::move(item));
  }
  PublishQueue();
  cv_.notify_one();
}

size_t Backing::queued() {
  std::lock_guard<std::mutex> lock(mu_);
  return queued_keys_.size();
}

void Backing::PublishQueue() {
  metrics_.SetGauge("regcache_backing_queue", "", static_cast<int64_t>(queued()));
}

Status Backing::Start() {
  std::vector<metadata::BackingWork> work;
  RC_RETURN_IF_ERROR(
      meta_.LoadBackingWork([&](const metadata::BackingWork& w) { work.push_back(w); }));
  for (auto& w : work) Enqueue(Item{std::move(w), 0}, false);
  if (!work.empty()) spdlog::info("backing: resuming {} queued copies", work.size());
  for (int i = 0; i < std::max(1, options_.threads); ++i) threads_.emplace_back([this] { Loop(); });
  return Status::Ok();
}

void Backing::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

void Backing::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    const auto now = std::chrono::steady_clock::now();
    while (!waiting_.empty() && waiting_.begin()->first <= now) {
      ready_.push_back(std::move(waiting_.begin()->second));
      waiting_.erase(waiting_.begin());
    }
    if (ready_.empty()) {
      if (waiting_.empty()) {
        cv_.wait(lock);
      } else {
        // A copy: wait_until holds a reference, and the entry may go while this thread sleeps.
        const auto until = waiting_.begin()->first;
        cv_.wait_until(lock, until);
      }
      continue;
    }
    Item item = std::move(ready_.front());
    ready_.pop_front();
    lock.unlock();
    Attempt r;
    try {
      r = Process(item.work);
    } catch (const std::exception& e) {
      r = Attempt{Outcome::kRetry, "internal", Internal(e.what())};
    }
    Finish(std::move(item), r);
    lock.lock();
  }
}

void Backing::Finish(Item item, const Attempt& r) {
  const std::string key = KeyOf(item.work);
  const bool give_up = r.outcome == Outcome::kDrop ||
                       (r.outcome != Outcome::kDone && ++item.attempts >= options_.max_attempts);
  if (r.outcome == Outcome::kDone || give_up) {
    if (give_up) {
      metrics_.Count("regcache_backing_failures_total", "reason=\"" + r.reason + "\"");
      spdlog::warn("backing: gave up copying {}: {}", Describe(item.work),
                   r.status.ok() ? r.reason : r.status.ToString());
    }
    Status s = meta_.RemoveBackingWork(item.work);
    if (!s.ok()) spdlog::warn("backing: forgetting {}: {}", Describe(item.work), s.ToString());
    {
      std::lock_guard<std::mutex> lock(mu_);
      queued_keys_.erase(key);
    }
    if (r.outcome == Outcome::kDone && item.work.kind == metadata::ContentKind::kBlob) {
      WakeWaiting(item.work.target);
    }
    PublishQueue();
    return;
  }
  if (r.outcome == Outcome::kRetry) {
    metrics_.Count("regcache_backing_failures_total", "reason=\"" + r.reason + "\"");
  }
  // Back off, doubling: a registry that is down or a reference not cached yet is not asked
  // again at once.
  auto delay = options_.retry_min * (1LL << std::min(item.attempts - 1, 20));
  if (delay > options_.retry_max) delay = options_.retry_max;
  std::lock_guard<std::mutex> lock(mu_);
  waiting_.emplace(std::chrono::steady_clock::now() + delay, std::move(item));
  cv_.notify_one();
}

// A blob arrived in `target`: manifests there waiting for their references try again now.
void Backing::WakeWaiting(const std::string& target) {
  std::lock_guard<std::mutex> lock(mu_);
  bool woke = false;
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (it->second.work.kind == metadata::ContentKind::kManifest &&
        it->second.work.target == target) {
      ready_.push_back(std::move(it->second));
      it = waiting_.erase(it);
      woke = true;
    } else {
      ++it;
    }
  }
  if (woke) cv_.notify_all();
}

Backing::Attempt Backing::Process(const metadata::BackingWork& w) {
  if (w.kind == metadata::ContentKind::kBlob) {
    Attempt r = PushBlob(w.target, w.digest);
    // Queued when committed here, gone now (evicted): a later fill queues it again.
    if (r.outcome == Outcome::kWait) r.outcome = Outcome::kDrop;
    return r;
  }
  return PushManifest(w.target, w.digest, w.tag, 0);
}

Backing::Attempt Backing::Failed(const std::string& target, const Status& s) {
  if (upstream::IsRepositoryMissing(s)) {
    bool first;
    {
      std::lock_guard<std::mutex> lock(known_mu_);
      first = missing_repositories_.insert(target).second;
    }
    if (first) {
      spdlog::error(
          "backing registry {} has no repository '{}' and does not create it on push (ECR): "
          "create it, e.g. `aws ecr create-repository --repository-name {}`; until then its "
          "content is served from this node only, and the copy is retried",
          registry(), target, target);
    }
    return Attempt{Outcome::kRetry, "name_unknown", s};
  }
  switch (s.code()) {
    case Code::kUnavailable:
    case Code::kRateLimited:
    case Code::kAborted:
      return Attempt{Outcome::kRetry, "unavailable", s};
    case Code::kUnauthenticated:
    case Code::kDenied:
      return Attempt{Outcome::kRetry, "denied", s};
    case Code::kIntegrity:
      // Everything sent was verified here: a registry that says otherwise read it while another
      // node wrote the same content (distribution rewrites files in place). Worth another try.
      return Attempt{Outcome::kRetry, "integrity", s};
    default:
      return Attempt{Outcome::kDrop, "rejected", s};
  }
}

template <typename Push>
Backing::Attempt Backing::PushAlone(const std::string& target, const oci::Digest& digest,
                                    IfPresent if_present, Push&& push) {
  const std::string key = target + "|" + digest.str();
  {
    std::unique_lock<std::mutex> lock(known_mu_);
    pushed_cv_.wait(lock, [&] { return !pushing_.count(key); });
    if (if_present == IfPresent::kSkip && present_.count(key)) return {};
    pushing_.insert(key);
  }
  Attempt r = push();
  {
    std::lock_guard<std::mutex> lock(known_mu_);
    pushing_.erase(key);
  }
  pushed_cv_.notify_all();
  return r;
}

Backing::Attempt Backing::PushBlob(const std::string& target, const oci::Digest& digest) {
  return PushAlone(target, digest, IfPresent::kSkip, [&] { return PushBlobOnce(target, digest); });
}

Backing::Attempt Backing::PushBlobOnce(const std::string& target, const oci::Digest& digest) {
  if (Distrusted(digest)) return Repair(target, digest);
  auto have = writer_->StatBlob(target, digest);
  if (!have.ok()) return Failed(target, have.status());
  if (have->has_value()) {
    MarkPresent(target, digest, true);
    return {};
  }
  std::string from;
  {
    std::lock_guard<std::mutex> lock(known_mu_);
    if (auto it = blob_home_.find(digest.str()); it != blob_home_.end() && it->second != target) {
      from = it->second;
    }
  }
  return Upload(target, digest, from);
}

Status Backing::VerifyCopy(const std::string& target, const oci::Digest& digest, uint64_t size) {
  // GetBlob hashes the stream and checks the size; the bytes themselves are not needed.
  oci::Descriptor blob;
  blob.digest = digest;
  blob.size = size;
  return writer_->GetBlob(target, blob, [](const char*, size_t) { return Status::Ok(); });
}

Backing::Attempt Backing::Repair(const std::string& target, const oci::Digest& digest) {
  auto size = blobs_.Stat(digest);
  if (!size.ok()) return Attempt{Outcome::kRetry, "local", size.status()};
  // Evicted here meanwhile: nothing verified to write back; a later fill queues it again.
  if (!*size) return Attempt{Outcome::kDrop, "not_cached", NotFound("blob not stored here")};
  Status before = VerifyCopy(target, digest, **size);
  if (before.ok()) {
    // The copy is sound (the bad read was the transfer's): trusted again as it is.
    spdlog::info("backing registry {}: blob {}@{} verifies now; trusted again", registry(), target,
                 digest.str());
    Trust(digest);
    MarkPresent(target, digest, true);
    return {};
  }
  if (before.code() != Code::kIntegrity && before.code() != Code::kNotFound) {
    return Failed(target, before);
  }
  if (before.code() == Code::kIntegrity) {
    Status deleted = writer_->DeleteBlob(target, digest);
    if (!deleted.ok() && deleted.code() != Code::kNotFound) {
      metrics_.Count("regcache_backing_repairs_total", "result=\"refused\"");
      spdlog::error(
          "backing registry {} holds a corrupt copy of {} in {} and refused to delete it ({}); "
          "allow deletes (distribution: storage.delete.enabled) or remove it there by hand; "
          "until then nodes fetch this blob from the upstream",
          registry(), digest.str(), target, deleted.message());
      return Attempt{Outcome::kDrop, "corrupt", deleted};
    }
  }
  Attempt uploaded = Upload(target, digest, "");
  if (uploaded.outcome != Outcome::kDone) return uploaded;
  Status after = VerifyCopy(target, digest, **size);
  if (after.ok()) {
    metrics_.Count("regcache_backing_repairs_total", "result=\"replaced\"");
    spdlog::info("backing registry {}: corrupt copy of {} in {} replaced by the verified one",
                 registry(), digest.str(), target);
    Trust(digest);
    return {};
  }
  metrics_.Count("regcache_backing_repairs_total", "result=\"kept\"");
  spdlog::error(
      "backing registry {} kept its corrupt copy of {} in {} after a delete and a new upload of "
      "the verified bytes ({}): content-addressed stores such as distribution's never overwrite "
      "a blob's data and a DELETE only unlinks it; remove the data in its storage (distribution: "
      "docker/registry/v2/blobs/{}/{}/{}/data) or run its garbage collector; until then nodes "
      "fetch this blob from the upstream",
      registry(), digest.str(), target, after.message(),
      digest.str().substr(0, digest.str().find(':')), digest.hex().substr(0, 2), digest.hex());
  return Attempt{Outcome::kDrop, "corrupt", after};
}

Backing::Attempt Backing::Upload(const std::string& target, const oci::Digest& digest,
                                 const std::string& from) {
  auto opened = blobs_.Open(digest);
  if (!opened.ok()) {
    if (opened.status().code() != Code::kNotFound)
      return Attempt{Outcome::kRetry, "local", opened.status()};
    if (from.empty()) return Attempt{Outcome::kWait, "not_cached", opened.status()};
  }
  const int fd = opened.ok() ? *opened : -1;
  struct Closer {
    int fd;
    ~Closer() {
      if (fd >= 0) ::close(fd);
    }
  } closer{fd};
  auto upload = writer_->StartUpload(target, digest, from);
  if (!upload.ok()) return Failed(target, upload.status());
  if (upload->mounted) {
    metrics_.Count("regcache_backing_mounted_blobs_total", "");
    MarkPresent(target, digest, true);
    return {};
  }
  if (fd < 0) {
    writer_->CancelUpload(*upload);
    return Attempt{Outcome::kWait, "not_cached", NotFound("blob not cached here")};
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    writer_->CancelUpload(*upload);
    return Attempt{Outcome::kRetry, "local", IoError("stat of a stored blob failed")};
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  upstream::UploadMode mode = upstream::UploadMode::kMonolithic;
  for (int attempt = 0; attempt < 2; ++attempt) {
    uint64_t offset = 0;
    auto reader = [&](char* buf, size_t max) -> Result<size_t> {
      size_t want = static_cast<size_t>(std::min<uint64_t>(max, size - offset));
      if (want == 0) return size_t{0};
      ssize_t n = ::pread(fd, buf, want, static_cast<off_t>(offset));
      if (n < 0) return IoError("reading stored blob " + digest.str());
      if (n == 0) return IoError("stored blob " + digest.str() + " is shorter than its size");
      offset += static_cast<uint64_t>(n);
      return static_cast<size_t>(n);
    };
    Status s = writer_->CompleteUpload(target, *upload, digest, size, reader, mode);
    if (s.ok()) {
      metrics_.Count("regcache_backing_uploaded_blobs_total", "");
      metrics_.Count("regcache_backing_uploaded_bytes_total", "", size);
      MarkPresent(target, digest, true);
      return {};
    }
    writer_->CancelUpload(*upload);
    if (s.code() != Code::kUnsupported || mode != upstream::UploadMode::kMonolithic) {
      return Failed(target, s);
    }
    mode = upstream::UploadMode::kChunked;
    upload = writer_->StartUpload(target, digest, "");
    if (!upload.ok()) return Failed(target, upload.status());
  }
  return Attempt{Outcome::kRetry, "rejected", Unavailable("upload refused")};
}

Backing::Attempt Backing::PushManifest(const std::string& target, const oci::Digest& digest,
                                       const std::string& tag, int depth) {
  if (tag.empty() && IsPresent(target, digest)) return {};
  auto media_type = meta_.GetManifestType(digest);
  if (!media_type.ok()) return Attempt{Outcome::kRetry, "local", media_type.status()};
  auto bytes = blobs_.ReadAll(digest, oci::kMaxManifestBytes);
  if (!*media_type || !bytes.ok()) {
    // Evicted or never stored durably: a later pull queues it again.
    return Attempt{Outcome::kDrop, "not_cached",
                   bytes.ok() ? NotFound("manifest type unknown") : bytes.status()};
  }
  auto parsed = oci::ParseManifest(*bytes, **media_type);
  if (!parsed.ok()) return Attempt{Outcome::kDrop, "rejected", parsed.status()};
  // References first: a registry refuses a manifest whose blobs or children it does not have.
  for (const auto& blob : parsed->Blobs()) {
    Attempt r = PushBlob(target, blob.digest);
    if (r.outcome != Outcome::kDone) return r;
  }
  for (const auto& child : parsed->manifests) {
    if (IsPresent(target, child.digest)) continue;
    auto head = writer_->HeadManifest(target, child.digest.str());
    if (head.ok()) {
      NotePresent(target, child.digest);
      continue;
    }
    if (head.status().code() != Code::kNotFound) return Failed(target, head.status());
    if (depth > 0) return Attempt{Outcome::kWait, "incomplete_index", head.status()};
    Attempt r = PushManifest(target, child.digest, "", depth + 1);
    if (r.outcome == Outcome::kDrop && r.reason == "not_cached") {
      // A platform no client pulled through this node: the index waits for it.
      return Attempt{Outcome::kWait, "incomplete_index", r.status};
    }
    if (r.outcome != Outcome::kDone) return r;
  }
  // distribution writes a manifest's file in place: two PUTs of one manifest at once (an index
  // pushing its child inline while the child's own item runs) can make one read the other's
  // half-written file and answer DIGEST_INVALID. One push per manifest at a time on this node.
  return PushAlone(
      target, digest, tag.empty() ? IfPresent::kSkip : IfPresent::kPush, [&]() -> Attempt {
        Status s =
            writer_->PutManifest(target, tag.empty() ? digest.str() : tag, **media_type, *bytes);
        if (!s.ok()) return Failed(target, s);
        metrics_.Count("regcache_backing_pushed_manifests_total",
                       tag.empty() ? "ref=\"digest\"" : "ref=\"tag\"");
        NotePresent(target, digest);
        return {};
      });
}

}  // namespace regcache::cache
