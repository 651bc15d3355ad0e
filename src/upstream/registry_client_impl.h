// libcurl implementation of RegistryClient: ping once, token flow with a per-scope cache,
// manual redirects (Authorization never leaves the registry's origin), retries with backoff.
#pragma once

#include <atomic>
#include <map>
#include <mutex>
#include <set>

#include "upstream/auth.h"
#include "upstream/registry_client.h"

namespace regcache::upstream {

class RegistryClientImpl : public RegistryClient {
 public:
  RegistryClientImpl(std::string registry, ClientOptions options);

  const std::string& registry() const override { return registry_; }
  Result<ManifestInfo> HeadManifest(const std::string& repo, const std::string& ref) override;
  Result<FetchedManifest> GetManifest(const std::string& repo, const std::string& ref) override;
  Result<std::optional<uint64_t>> StatBlob(const std::string& repo,
                                           const oci::Digest& digest) override;
  Status GetBlob(const std::string& repo, const oci::Descriptor& blob,
                 const std::function<Status(const char*, size_t)>& sink) override;
  Status FetchBlob(const std::string& repo, const oci::Digest& digest,
                   const std::function<Status(uint64_t size)>& on_size,
                   const std::function<Status(const char*, size_t)>& sink) override;
  Result<UploadTarget> StartUpload(const std::string& repo, const oci::Digest& digest,
                                   const std::string& mount_from) override;
  Status CompleteUpload(const std::string& repo, const UploadTarget& target,
                        const oci::Digest& digest, uint64_t size, const BodyReader& reader,
                        UploadMode mode) override;
  void CancelUpload(const UploadTarget& target) override;
  Status DeleteBlob(const std::string& repo, const oci::Digest& digest) override;
  Status PutManifest(const std::string& repo, const std::string& ref, const std::string& media_type,
                     const std::string& bytes) override;
  Result<TagList> ListTags(const std::string& repo) override;
  Result<HttpResponse> GetRaw(const std::string& repo, const std::string& path_and_query) override;
  RateLimitInfo rate_limit() const override;
  RequestStats stats() const override;

 private:
  // One logical request: auth, redirects and (when `retry` is set) retries are applied by Call.
  struct Call {
    std::string method = "GET";
    std::string url;  // absolute, or a path below the registry origin
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;
    BodyReader reader;
    std::optional<uint64_t> body_size;
    std::vector<std::string> scopes;
    bool retry = true;  // false for streamed bodies and resumable downloads
    std::function<Status(long, const HttpHeaders&)> on_headers;
    const BodySink* sink = nullptr;
    bool is_manifest = false;
    bool cross_origin_redirects = false;  // blob downloads only
  };

  // GetBlob and FetchBlob: `size` nullopt means learn it from the registry's answer.
  Status DownloadBlob(const std::string& repo, const oci::Digest& digest,
                      std::optional<uint64_t> size,
                      const std::function<Status(uint64_t size)>& on_size,
                      const std::function<Status(const char*, size_t)>& sink);
  // Whether attempt `attempt` (1-based) may be followed by another under the retry policy.
  bool MayRetry(int attempt, std::chrono::steady_clock::time_point start) const;

  Status EnsurePinged();
  Result<HttpResponse> Execute(const Call& call);
  Result<HttpResponse> SendOnce(const Call& call, const std::string& authorization);
  // Authorization header for `scopes` ("" for anonymous). `challenge` refreshes it from a 401.
  Result<std::string> Authorization(const std::vector<std::string>& scopes,
                                    const AuthChallenge* challenge);
  Result<BearerToken> FetchToken(const AuthChallenge& challenge,
                                 const std::vector<std::string>& scopes);
  void RecordRateLimit(const HttpHeaders& headers);
  void Count(const std::string& method, bool manifest);
  std::vector<std::string> ScopesFor(const std::string& repo) const;
  std::string BlobUrl(const std::string& repo, const oci::Digest& d) const;

  const std::string registry_;
  const std::string host_;  // API host
  ClientOptions options_;
  HttpTransport transport_;
  std::shared_ptr<CredentialResolver> credentials_;

  mutable std::mutex mu_;  // guards everything below
  bool pinged_ = false;
  std::string origin_;  // "https://host" or "http://host"
  bool verify_tls_ = true;
  std::optional<AuthChallenge> challenge_;     // from the ping (or a later 401)
  std::map<std::string, BearerToken> tokens_;  // by sorted scope list
  RateLimitInfo rate_limit_;
  RequestStats stats_;
};

// Maps a registry error response to a Status: 401 kUnauthenticated, 403 kDenied, 404 kNotFound,
// 429 kRateLimited, 408/5xx kUnavailable, DIGEST_INVALID/SIZE_INVALID kIntegrity, other 4xx
// kInvalidArgument. The message carries the registry's OCI error code and message.
Status StatusFromResponse(const HttpResponse& response, const std::string& what);

}  // namespace regcache::upstream
