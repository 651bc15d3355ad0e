// A client for one OCI distribution registry (pull and push side). The copy engine and the
// caching server use it through this interface; registry_client_impl.h implements it on libcurl.
//
// Contract for every call: on success, the registry answered as the spec says; on failure, the
// Status code says why (kNotFound, kUnauthenticated, kDenied, kRateLimited, kUnavailable after
// retries, kIntegrity when content does not match its digest) and the message quotes the
// registry's own error when it gave one. Calls are safe from many threads at once.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "oci/digest.h"
#include "oci/manifest.h"
#include "upstream/credentials.h"
#include "upstream/http_transport.h"
#include "upstream/retry.h"
#include "upstream/tag_listing.h"

namespace regcache::upstream {

struct ManifestInfo {
  oci::Digest digest;
  std::string media_type;
  uint64_t size = 0;
};

struct FetchedManifest {
  ManifestInfo info;
  std::string bytes;  // exactly as received
};

// Docker Hub's pull quota as last reported (-1: never reported, i.e. unlimited or not Hub).
struct RateLimitInfo {
  int64_t limit = -1;
  int64_t remaining = -1;
  int64_t window_s = -1;
  std::string source;
};

struct RequestStats {
  uint64_t head = 0, get = 0, put = 0, post = 0, patch = 0, other = 0;
  uint64_t manifest_gets = 0;  // the requests Docker Hub counts as pulls
  uint64_t Total() const { return head + get + put + post + patch + other; }
};

// Where a started upload goes; `mounted` means the registry already linked the blob.
struct UploadTarget {
  bool mounted = false;
  std::string location;
  uint64_t chunk_min_length = 0;  // OCI-Chunk-Min-Length: the registry wants chunked uploads
};

enum class UploadMode { kMonolithic, kChunked };

class RegistryClient {
 public:
  virtual ~RegistryClient() = default;

  // Normalized registry name this client talks to ("docker.io", "localhost:5000").
  virtual const std::string& registry() const = 0;

  // HEAD /v2/<repo>/manifests/<ref>. Costs no Docker Hub quota.
  virtual Result<ManifestInfo> HeadManifest(const std::string& repo, const std::string& ref) = 0;

  // GET /v2/<repo>/manifests/<ref>. The digest is computed over the received bytes and must
  // match `ref` when it is a digest and Docker-Content-Digest when sent (else kIntegrity).
  virtual Result<FetchedManifest> GetManifest(const std::string& repo, const std::string& ref) = 0;

  // HEAD /v2/<repo>/blobs/<digest>: the size when present, nullopt when not.
  virtual Result<std::optional<uint64_t>> StatBlob(const std::string& repo,
                                                   const oci::Digest& digest) = 0;

  // Streams a blob to `sink`, each byte exactly once and in order. An interrupted download is
  // resumed with Range. Fails with kIntegrity if the bytes exceed `blob.size` or do not hash to
  // `blob.digest`; the sink has then seen unverified bytes and must discard them.
  virtual Status GetBlob(const std::string& repo, const oci::Descriptor& blob,
                         const std::function<Status(const char*, size_t)>& sink) = 0;

  // Like GetBlob, for a blob whose size is not known in advance: the size is the registry's own
  // Content-Length for this digest (kUnavailable if it sends none), reported once to `on_size`
  // before the first byte reaches `sink`. A non-ok Status from `on_size` aborts the download.
  virtual Status FetchBlob(const std::string& repo, const oci::Digest& digest,
                           const std::function<Status(uint64_t size)>& on_size,
                           const std::function<Status(const char*, size_t)>& sink) = 0;

  // POST /v2/<repo>/blobs/uploads/, with ?mount=&from= when `mount_from` is set.
  virtual Result<UploadTarget> StartUpload(const std::string& repo, const oci::Digest& digest,
                                           const std::string& mount_from) = 0;

  // Sends `size` bytes from `reader` to a started upload and commits it under `digest`. The
  // reader is consumed once: a failure here is not retried (the caller restarts the blob).
  // kUnsupported means the registry refused a monolithic upload: retry with kChunked.
  virtual Status CompleteUpload(const std::string& repo, const UploadTarget& target,
                                const oci::Digest& digest, uint64_t size, const BodyReader& reader,
                                UploadMode mode) = 0;

  // Best-effort DELETE of an abandoned upload session.
  virtual void CancelUpload(const UploadTarget& target) = 0;

  // DELETE /v2/<repo>/blobs/<digest>. kNotFound when the repository does not hold it;
  // kUnsupported when the registry does not delete (405, e.g. distribution without
  // storage.delete.enabled). What a registry deletes is its own business: distribution removes
  // the repository's link and keeps the data until its garbage collector runs.
  virtual Status DeleteBlob(const std::string& repo, const oci::Digest& digest) = 0;

  // PUT /v2/<repo>/manifests/<ref> with the exact bytes. Retried on 5xx/429/network errors.
  virtual Status PutManifest(const std::string& repo, const std::string& ref,
                             const std::string& media_type, const std::string& bytes) = 0;

  // All entries of `repo`'s tag list, as the registry sent them (not checked as tags), following
  // `Link: <…>; rel="next"` pagination within the bounds and rules of upstream/tag_listing.h:
  // a Link is resolved against its page and followed on the registry's own origin only (one to
  // another origin is kUnavailable, and that origin is never asked); passing kMaxTagListPages,
  // kMaxTagListBytes, kMaxListedTags or kTagListTimeout is kUnavailable naming the bound and the
  // repository, not a shorter list; a Link back to a page already read ends the listing with
  // what was read, and TagList::stopped says so.
  virtual Result<TagList> ListTags(const std::string& repo) = 0;

  // One GET of `path_and_query` (below /v2/<repo>/) with auth and retries; any HTTP status is
  // returned as a response (for pass-through endpoints: tags/list pages, referrers). A redirect
  // to another origin is not followed (kUnavailable): only blob downloads may leave the registry.
  virtual Result<HttpResponse> GetRaw(const std::string& repo,
                                      const std::string& path_and_query) = 0;

  virtual RateLimitInfo rate_limit() const = 0;
  virtual RequestStats stats() const = 0;
};

// Whether `status` says the repository does not exist on the registry (NAME_UNKNOWN, or a 404
// when starting an upload): registries such as ECR do not create repositories on push.
bool IsRepositoryMissing(const Status& status);

struct ClientOptions {
  std::shared_ptr<CredentialResolver> credentials;  // null: anonymous
  TransportOptions transport;
  RetryPolicy retry;
  // Hosts (host[:port]) that may be reached over plain HTTP; loopback always may.
  std::vector<std::string> insecure_registries;
  // The registry is configured as http://: speak plain HTTP only, never try TLS first.
  bool plain_http = false;
  // Ask tokens for pull,push (a destination) instead of pull.
  bool push = false;
  // Called after every HTTP exchange with the registry (status 0: no response), e.g. for metrics.
  std::function<void(const std::string& method, long status)> on_response;
};

// The Retry-After seconds a kRateLimited or kUnavailable Status carries (0 if none): the text
// "; retry after N" at the end of its message, as WithRetryAfter writes it.
int64_t RetryAfterSeconds(const Status& status);
Status WithRetryAfter(const Status& status, int64_t seconds);

// Creates a client for a normalized registry name (see oci::ParseReference).
std::unique_ptr<RegistryClient> NewRegistryClient(const std::string& registry,
                                                  ClientOptions options);

// localhost, 127.0.0.0/8 and ::1, with or without a port.
bool IsLoopbackHost(const std::string& host_port);

}  // namespace regcache::upstream
