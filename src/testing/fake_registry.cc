#include "testing/fake_registry.h"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace regcache::testing {

void FakeRegistry::PutBlobData(const std::string& repo, const oci::Digest& digest,
                               std::string bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  data_[digest.str()] = std::move(bytes);
  repos_[repo].blobs.insert(digest.str());
}

oci::Digest FakeRegistry::PutBlob(const std::string& repo, const std::string& bytes) {
  oci::Digest digest = oci::Digest::Of(bytes);
  PutBlobData(repo, digest, bytes);
  return digest;
}

oci::Digest FakeRegistry::PutManifest(const std::string& repo, const std::string& media_type,
                                      const std::string& bytes, const std::string& tag) {
  oci::Digest digest = oci::Digest::Of(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  auto& r = repos_[repo];
  r.manifests[digest.str()] = Manifest{media_type, bytes};
  if (!tag.empty()) r.tags[tag] = digest.str();
  return digest;
}

void FakeRegistry::Tag(const std::string& repo, const std::string& tag, const oci::Digest& digest) {
  std::lock_guard<std::mutex> lock(mu_);
  repos_[repo].tags[tag] = digest.str();
}

bool FakeRegistry::Links(const std::string& repo, const oci::Digest& digest) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = repos_.find(repo);
  return it != repos_.end() && it->second.blobs.count(digest.str()) > 0;
}

std::optional<std::string> FakeRegistry::BlobData(const oci::Digest& digest) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = data_.find(digest.str());
  if (it == data_.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> FakeRegistry::ManifestBytes(const std::string& repo,
                                                       const std::string& ref) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto r = repos_.find(repo);
  if (r == repos_.end()) return std::nullopt;
  std::string digest = ref;
  if (auto t = r->second.tags.find(ref); t != r->second.tags.end()) digest = t->second;
  auto m = r->second.manifests.find(digest);
  if (m == r->second.manifests.end()) return std::nullopt;
  return m->second.bytes;
}

void FakeRegistry::FailNext(Op op, Status status, int times) {
  std::lock_guard<std::mutex> lock(mu_);
  for (int i = 0; i < times; ++i) scripted_[op].push_back(status);
}

int FakeRegistry::Calls(Op op) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = calls_.find(op);
  return it == calls_.end() ? 0 : it->second;
}

std::optional<Status> FakeRegistry::Enter(Op op) {
  std::lock_guard<std::mutex> lock(mu_);
  ++calls_[op];
  auto it = scripted_.find(op);
  if (it == scripted_.end() || it->second.empty()) return std::nullopt;
  Status s = it->second.front();
  it->second.erase(it->second.begin());
  return s;
}

class FakeRegistryClient : public upstream::RegistryClient {
 public:
  explicit FakeRegistryClient(FakeRegistry& registry) : r_(registry) {}

  const std::string& registry() const override { return r_.name(); }

  Result<upstream::ManifestInfo> HeadManifest(const std::string& repo,
                                              const std::string& ref) override {
    if (auto s = r_.Enter(Op::kHeadManifest)) return *s;
    RC_ASSIGN_OR_RETURN(auto m, Find(repo, ref));
    return m.info;
  }

  Result<upstream::FetchedManifest> GetManifest(const std::string& repo,
                                                const std::string& ref) override {
    if (auto s = r_.Enter(Op::kGetManifest)) return *s;
    ++gets_;
    RC_ASSIGN_OR_RETURN(auto m, Find(repo, ref));
    auto asked = oci::Digest::Parse(ref);
    if (asked.ok() && !(*asked == m.info.digest)) {
      return Integrity("manifest " + repo + "@" + ref + " hashes to " + m.info.digest.str());
    }
    return m;
  }

  Result<std::optional<uint64_t>> StatBlob(const std::string& repo,
                                           const oci::Digest& digest) override {
    if (auto s = r_.Enter(Op::kStatBlob)) return *s;
    if (!r_.Links(repo, digest)) return std::optional<uint64_t>();
    auto data = r_.BlobData(digest);
    return std::optional<uint64_t>(data ? data->size() : 0);
  }

  Status GetBlob(const std::string& repo, const oci::Descriptor& blob,
                 const std::function<Status(const char*, size_t)>& sink) override {
    return Download(repo, blob.digest, blob.size, nullptr, sink);
  }

  Status FetchBlob(const std::string& repo, const oci::Digest& digest,
                   const std::function<Status(uint64_t size)>& on_size,
                   const std::function<Status(const char*, size_t)>& sink) override {
    return Download(repo, digest, std::nullopt, on_size, sink);
  }

  Result<upstream::UploadTarget> StartUpload(const std::string& repo, const oci::Digest& digest,
                                             const std::string& mount_from) override {
    if (auto s = r_.Enter(Op::kStartUpload)) return *s;
    std::lock_guard<std::mutex> lock(r_.mu_);
    upstream::UploadTarget t;
    if (!mount_from.empty()) {
      auto from = r_.repos_.find(mount_from);
      if (from != r_.repos_.end() && from->second.blobs.count(digest.str())) {
        r_.repos_[repo].blobs.insert(digest.str());
        t.mounted = true;
        return t;
      }
    }
    t.location = "/v2/" + repo + "/blobs/uploads/" + std::to_string(r_.next_upload_++);
    return t;
  }

  Status CompleteUpload(const std::string& repo, const upstream::UploadTarget& target,
                        const oci::Digest& digest, uint64_t size,
                        const upstream::BodyReader& reader, upstream::UploadMode) override {
    if (auto s = r_.Enter(Op::kCompleteUpload)) return *s;
    if (target.location.empty()) return InvalidArgument("no upload session");
    std::string bytes;
    char buf[64 * 1024];
    while (bytes.size() < size) {
      RC_ASSIGN_OR_RETURN(size_t n, reader(buf, sizeof(buf)));
      if (n == 0) break;
      bytes.append(buf, n);
    }
    if (bytes.size() != size || !(oci::Digest::Of(bytes, digest.algorithm()) == digest)) {
      return Integrity("upload of " + digest.str() + " does not match its digest");
    }
    std::lock_guard<std::mutex> lock(r_.mu_);
    // As distribution: data already stored under the digest is kept, whatever it holds.
    r_.data_.emplace(digest.str(), std::move(bytes));
    r_.repos_[repo].blobs.insert(digest.str());
    return Status::Ok();
  }

  void CancelUpload(const upstream::UploadTarget&) override {}

  Status DeleteBlob(const std::string& repo, const oci::Digest& digest) override {
    if (auto s = r_.Enter(Op::kDeleteBlob)) return *s;
    if (!r_.options_.deletes_enabled) return Unsupported("DELETE blob: HTTP 405 UNSUPPORTED");
    std::lock_guard<std::mutex> lock(r_.mu_);
    auto it = r_.repos_.find(repo);
    if (it == r_.repos_.end() || !it->second.blobs.erase(digest.str())) {
      return NotFound("blob " + digest.str() + " is not in " + repo);
    }
    if (r_.options_.delete_removes_data) r_.data_.erase(digest.str());
    return Status::Ok();
  }

  Status PutManifest(const std::string& repo, const std::string& ref, const std::string& media_type,
                     const std::string& bytes) override {
    if (auto s = r_.Enter(Op::kPutManifest)) return *s;
    oci::Digest digest = oci::Digest::Of(bytes);
    auto asked = oci::Digest::Parse(ref);
    if (asked.ok() && !(*asked == digest)) return Integrity("manifest does not match " + ref);
    r_.PutManifest(repo, media_type, bytes, asked.ok() ? "" : ref);
    return Status::Ok();
  }

  Result<upstream::TagList> ListTags(const std::string& repo) override {
    if (auto s = r_.Enter(Op::kListTags)) return *s;
    std::lock_guard<std::mutex> lock(r_.mu_);
    auto it = r_.repos_.find(repo);
    if (it == r_.repos_.end()) return NotFound("repository " + repo + " unknown");
    upstream::TagList out;
    for (const auto& [tag, digest] : it->second.tags) out.tags.push_back(tag);
    return out;
  }

  Result<upstream::HttpResponse> GetRaw(const std::string& repo,
                                        const std::string& path_and_query) override {
    if (auto s = r_.Enter(Op::kGetRaw)) return *s;
    upstream::HttpResponse r;
    if (path_and_query.rfind("tags/list", 0) != 0) {
      r.status = 404;
      return r;
    }
    auto tags = ListTags(repo);
    if (!tags.ok()) {
      r.status = 404;
      return r;
    }
    r.status = 200;
    r.headers.Add("Content-Type", "application/json");
    r.body = nlohmann::json({{"name", repo}, {"tags", tags->tags}}).dump();
    return r;
  }

  upstream::RateLimitInfo rate_limit() const override { return {}; }
  upstream::RequestStats stats() const override {
    upstream::RequestStats s;
    s.manifest_gets = gets_.load();
    return s;
  }

 private:
  Result<upstream::FetchedManifest> Find(const std::string& repo, const std::string& ref) {
    std::lock_guard<std::mutex> lock(r_.mu_);
    auto it = r_.repos_.find(repo);
    if (it == r_.repos_.end()) return NotFound("repository " + repo + " unknown");
    std::string digest = ref;
    if (auto t = it->second.tags.find(ref); t != it->second.tags.end()) digest = t->second;
    auto m = it->second.manifests.find(digest);
    if (m == it->second.manifests.end())
      return NotFound("manifest " + repo + ":" + ref + " unknown");
    upstream::FetchedManifest out;
    out.bytes = m->second.bytes;
    out.info.media_type = m->second.media_type;
    out.info.size = out.bytes.size();
    out.info.digest = oci::Digest::Of(out.bytes);
    return out;
  }

  // Streams the stored data in pieces, then verifies it as the real client does: more bytes than
  // the expected size, or a hash that is not the digest, is kIntegrity after the sink saw them.
  Status Download(const std::string& repo, const oci::Digest& digest, std::optional<uint64_t> size,
                  const std::function<Status(uint64_t size)>& on_size,
                  const std::function<Status(const char*, size_t)>& sink) {
    if (auto s = r_.Enter(Op::kGetBlob)) return *s;
    if (!r_.Links(repo, digest)) return NotFound("blob " + digest.str() + " unknown in " + repo);
    std::string data = r_.BlobData(digest).value_or("");
    if (on_size) RC_RETURN_IF_ERROR(on_size(data.size()));
    constexpr size_t kPiece = 64 * 1024;
    for (size_t at = 0; at < data.size(); at += kPiece) {
      RC_RETURN_IF_ERROR(sink(data.data() + at, std::min(kPiece, data.size() - at)));
    }
    if ((size && data.size() != *size) || !(oci::Digest::Of(data, digest.algorithm()) == digest)) {
      return Integrity("blob " + digest.str() + " from " + r_.name() +
                       " does not match its digest or size");
    }
    return Status::Ok();
  }

  FakeRegistry& r_;
  std::atomic<uint64_t> gets_{0};
};

std::unique_ptr<upstream::RegistryClient> FakeRegistry::NewClient() {
  return std::make_unique<FakeRegistryClient>(*this);
}

}  // namespace regcache::testing
