#include "upstream/registry_client_impl.h"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/strings.h"
#include "oci/reference.h"

namespace regcache::upstream {
namespace {

bool IsRedirect(long status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

std::string ScopeKey(std::vector<std::string> scopes) {
  std::sort(scopes.begin(), scopes.end());
  std::string key;
  for (const auto& s : scopes) key += s + " ";
  return key;
}

// "http://host:port/x" -> "host" (lowercase, without port or brackets).
std::string HostOfUrl(const std::string& url) {
  std::string origin = UrlOrigin(url);
  size_t scheme = origin.find("://");
  std::string host = scheme == std::string::npos ? origin : origin.substr(scheme + 3);
  if (StartsWith(host, "[")) return host.substr(0, host.find(']') + 1);
  return host.substr(0, host.find(':'));
}

std::string WithQuery(const std::string& url, const std::string& query) {
  return url + (url.find('?') == std::string::npos ? "?" : "&") + query;
}

}  // namespace

bool IsLoopbackHost(const std::string& host_port) {
  std::string host = host_port;
  if (StartsWith(host, "[")) {
    host = host.substr(1, host.find(']') - 1);
    return host == "::1";
  }
  host = host.substr(0, host.find(':'));
  return host == "localhost" || StartsWith(host, "127.");
}

namespace {
constexpr const char* kRepositoryMissing =
    " does not exist and the registry does not create it on push";
}  // namespace

bool IsRepositoryMissing(const Status& status) {
  return status.code() == Code::kNotFound &&
         (status.message().find("NAME_UNKNOWN") != std::string::npos ||
          status.message().find(kRepositoryMissing) != std::string::npos);
}

Status StatusFromResponse(const HttpResponse& r, const std::string& what) {
  std::string oci_code, oci_message;
  auto doc = nlohmann::json::parse(r.body, nullptr, false);
  if (!doc.is_discarded() && doc.is_object() && doc.contains("errors") &&
      doc["errors"].is_array() && !doc["errors"].empty() && doc["errors"][0].is_object()) {
    const auto& e = doc["errors"][0];
    if (e.contains("code") && e["code"].is_string()) oci_code = e["code"];
    if (e.contains("message") && e["message"].is_string()) oci_message = e["message"];
  }
  std::string msg = what + ": HTTP " + std::to_string(r.status);
  if (!oci_code.empty()) msg += " " + oci_code;
  if (!oci_message.empty()) msg += " (" + oci_message + ")";
  Code code;
  switch (r.status) {
    case 401:
      code = Code::kUnauthenticated;
      break;
    case 403:
      code = Code::kDenied;
      break;
    case 404:
      code = Code::kNotFound;
      break;
    case 429:
      code = Code::kRateLimited;
      break;
    case 408:
      code = Code::kUnavailable;
      break;
    default:
      if (r.status >= 500) {
        code = Code::kUnavailable;
      } else if (oci_code == "DIGEST_INVALID" || oci_code == "SIZE_INVALID") {
        code = Code::kIntegrity;
      } else if (oci_code == "NAME_UNKNOWN" || oci_code == "MANIFEST_UNKNOWN" ||
                 oci_code == "BLOB_UNKNOWN") {
        code = Code::kNotFound;
      } else if (oci_code == "DENIED") {
        code = Code::kDenied;
      } else {
        code = Code::kInvalidArgument;
      }
  }
  Status status(code, msg);
  if (r.status == 429 || r.status == 503) {
    auto ra = ParseRetryAfter(r.headers.Get("Retry-After"), std::chrono::system_clock::now());
    if (ra) status = WithRetryAfter(status, ra->count());
  }
  return status;
}

std::unique_ptr<RegistryClient> NewRegistryClient(const std::string& registry,
                                                  ClientOptions options) {
  return std::make_unique<RegistryClientImpl>(registry, std::move(options));
}

RegistryClientImpl::RegistryClientImpl(std::string registry, ClientOptions options)
    : registry_(std::move(registry)),
      host_(oci::RegistryApiHost(registry_)),
      options_(std::move(options)),
      transport_(options_.transport),
      credentials_(options_.credentials) {}

std::vector<std::string> RegistryClientImpl::ScopesFor(const std::string& repo) const {
  return {"repository:" + repo + (options_.push ? ":pull,push" : ":pull")};
}

std::string RegistryClientImpl::BlobUrl(const std::string& repo, const oci::Digest& d) const {
  return "/v2/" + repo + "/blobs/" + d.str();
}

void RegistryClientImpl::Count(const std::string& method, bool manifest) {
  std::lock_guard<std::mutex> lock(mu_);
  if (method == "HEAD")
    ++stats_.head;
  else if (method == "GET")
    ++stats_.get;
  else if (method == "PUT")
    ++stats_.put;
  else if (method == "POST")
    ++stats_.post;
  else if (method == "PATCH")
    ++stats_.patch;
  else
    ++stats_.other;
  if (manifest && method == "GET") ++stats_.manifest_gets;
}

RequestStats RegistryClientImpl::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

RateLimitInfo RegistryClientImpl::rate_limit() const {
  std::lock_guard<std::mutex> lock(mu_);
  return rate_limit_;
}

void RegistryClientImpl::RecordRateLimit(const HttpHeaders& h) {
  std::string limit = h.Get("ratelimit-limit");
  std::string remaining = h.Get("ratelimit-remaining");
  if (limit.empty() && remaining.empty()) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (!limit.empty()) {
    auto v = ParseRateLimitHeader(limit);
    rate_limit_.limit = v.count;
    rate_limit_.window_s = v.window_s;
  }
  if (!remaining.empty()) rate_limit_.remaining = ParseRateLimitHeader(remaining).count;
  std::string source = h.Get("docker-ratelimit-source");
  if (!source.empty()) rate_limit_.source = source;
}

Status RegistryClientImpl::EnsurePinged() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (pinged_) return Status::Ok();
  }
  const bool may_use_http =
      IsLoopbackHost(host_) ||
      std::find(options_.insecure_registries.begin(), options_.insecure_registries.end(),
                registry_) != options_.insecure_registries.end() ||
      std::find(options_.insecure_registries.begin(), options_.insecure_registries.end(), host_) !=
          options_.insecure_registries.end();

  // Like docker: HTTPS first; an insecure registry may present a bad certificate or speak
  // plain HTTP, in which case we fall back.
  std::vector<std::pair<std::string, bool>> candidates = {{"https://" + host_, !may_use_http}};
  if (may_use_http) candidates.push_back({"http://" + host_, false});
  // Configured as http://: a TLS hello would only cost a timeout on a server that ignores it.
  if (options_.plain_http) candidates = {{"http://" + host_, false}};

  Status last;
  const auto start = std::chrono::steady_clock::now();
  for (int attempt = 1; attempt <= options_.retry.max_attempts; ++attempt) {
    for (const auto& [origin, verify] : candidates) {
      HttpRequest req;
      req.url = origin + "/v2/";
      req.verify_tls = verify;
      Count("GET", false);
      auto r = transport_.Perform(req);
      if (!r.ok()) {
        last = r.status();
        if (HttpTransport::LooksLikeTlsFailure(r.status()) && may_use_http) continue;
        break;  // a connection failure on HTTPS will not be fixed by HTTP on the same port
      }
      if (r->status >= 500 || r->status == 429) {
        last = StatusFromResponse(*r, "ping " + origin);
        if (r->status == 429 && !options_.retry.retry_rate_limited) return last;
        break;
      }
      std::lock_guard<std::mutex> lock(mu_);
      origin_ = origin;
      verify_tls_ = verify;
      if (r->status == 401) {
        for (const auto& c : ParseWwwAuthenticate(r->headers.Get("WWW-Authenticate"))) {
          if (c.scheme == "bearer" || c.scheme == "basic") {
            challenge_ = c;
            break;
          }
        }
      }
      pinged_ = true;
      return Status::Ok();
    }
    if (last.code() == Code::kAborted || !MayRetry(attempt, start)) break;
    std::this_thread::sleep_for(options_.retry.Backoff(attempt));
  }
  return Status(last.code() == Code::kOk ? Code::kUnavailable : last.code(),
                "cannot reach registry " + registry_ + ": " + last.message());
}

Result<BearerToken> RegistryClientImpl::FetchToken(const AuthChallenge& challenge,
                                                   const std::vector<std::string>& scopes) {
  std::string realm = challenge.Param("realm");
  if (!StartsWith(realm, "https://") && !StartsWith(realm, "http://")) {
    return Status(Code::kUnauthenticated,
                  registry_ + " sent a Bearer challenge without a usable realm");
  }
  Credentials creds;
  // Credentials travel only over TLS, or to the registry's own host: a challenge naming a realm
  // elsewhere over plain HTTP would hand them to whoever answers there.
  const bool realm_trusted =
      StartsWith(realm, "https://") || HostOfUrl(realm) == HostOfUrl(origin_);
  if (credentials_ && realm_trusted) {
    RC_ASSIGN_OR_RETURN(creds, credentials_->Resolve(registry_));
  }
  std::string service = challenge.Param("service");
  HttpRequest req;
  req.verify_tls = verify_tls_ || !StartsWith(realm, origin_);
  if (!creds.identity_token.empty()) {
    // OAuth2 refresh-token grant, as docker does for identity tokens.
    req.method = "POST";
    req.url = realm;
    req.headers.push_back({"Content-Type", "application/x-www-form-urlencoded"});
    std::string form = "grant_type=refresh_token&client_id=regcache&refresh_token=" +
                       UrlEncode(creds.identity_token) + "&service=" + UrlEncode(service);
    for (const auto& s : scopes) form += "&scope=" + UrlEncode(s);
    req.body = form;
  } else {
    std::string url = realm;
    if (!service.empty()) url = WithQuery(url, "service=" + UrlEncode(service));
    for (const auto& s : scopes) url = WithQuery(url, "scope=" + UrlEncode(s));
    req.url = url;
    if (!creds.username.empty()) {
      req.headers.push_back(
          {"Authorization", "Basic " + Base64Encode(creds.username + ":" + creds.password)});
    }
  }
  Status last;
  const auto start = std::chrono::steady_clock::now();
  for (int attempt = 1; attempt <= options_.retry.max_attempts; ++attempt) {
    Count(req.method, false);
    auto r = transport_.Perform(req);
    if (r.ok() && r->status == 200) {
      return ParseTokenResponse(r->body, std::chrono::steady_clock::now());
    }
    if (r.ok() && !IsRetryableHttpStatus(r->status)) {
      Status s = StatusFromResponse(*r, "token request to " + realm);
      if (r->status == 401 || r->status == 403) {
        if (credentials_ && !creds.empty()) credentials_->Invalidate(registry_);
        return Status(
            Code::kUnauthenticated,
            s.message() + (creds.empty() ? " (no credentials configured for " + registry_ + ")"
                                         : " (credentials for " + registry_ + " rejected)"));
      }
      return s;
    }
    last = r.ok() ? StatusFromResponse(*r, "token request to " + realm) : r.status();
    if (last.code() == Code::kAborted || !MayRetry(attempt, start)) break;
    if (last.code() == Code::kRateLimited && !options_.retry.retry_rate_limited) break;
    std::this_thread::sleep_for(options_.retry.Backoff(attempt));
  }
  return last;
}

Result<std::string> RegistryClientImpl::Authorization(const std::vector<std::string>& scopes,
                                                      const AuthChallenge* fresh) {
  std::optional<AuthChallenge> challenge;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (fresh) challenge_ = *fresh;
    challenge = challenge_;
  }
  if (!challenge) return std::string();
  if (challenge->scheme == "basic") {
    if (!credentials_) return std::string();
    RC_ASSIGN_OR_RETURN(Credentials c, credentials_->Resolve(registry_));
    if (c.username.empty()) return std::string();
    return "Basic " + Base64Encode(c.username + ":" + c.password);
  }
  std::vector<std::string> want = scopes;
  if (fresh && !fresh->Param("scope").empty()) {
    for (const auto& s : Split(fresh->Param("scope"), ' ')) {
      if (!s.empty() && std::find(want.begin(), want.end(), s) == want.end()) want.push_back(s);
    }
  }
  const std::string key = ScopeKey(scopes);
  if (!fresh) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = tokens_.find(key);
    if (it != tokens_.end() && it->second.expires_at > std::chrono::steady_clock::now()) {
      return "Bearer " + it->second.value;
    }
  }
  RC_ASSIGN_OR_RETURN(BearerToken token, FetchToken(*challenge, want));
  std::lock_guard<std::mutex> lock(mu_);
  tokens_[key] = token;
  return "Bearer " + token.value;
}

Result<HttpResponse> RegistryClientImpl::SendOnce(const Call& call,
                                                  const std::string& authorization) {
  std::string origin;
  bool verify;
  {
    std::lock_guard<std::mutex> lock(mu_);
    origin = origin_;
    verify = verify_tls_;
  }
  std::string url = StartsWith(call.url, "/") ? origin + call.url : call.url;
  std::string method = call.method;
  for (int hop = 0; hop <= 5; ++hop) {
    HttpRequest req;
    req.method = method;
    req.url = url;
    req.headers = call.headers;
    const bool same_origin = UrlOrigin(url) == ToLower(origin);
    // Credentials go to the registry only, never to a CDN or S3 it redirects to.
    if (same_origin && !authorization.empty())
      req.headers.push_back({"Authorization", authorization});
    req.verify_tls = same_origin ? verify : true;
    if (method != "GET" && method != "HEAD") {
      req.body = call.body;
      req.reader = call.reader;
      req.body_size = call.body_size;
    }
    req.on_headers = call.on_headers;
    Count(method, call.is_manifest);
    auto r = transport_.Perform(req, call.sink ? *call.sink : BodySink());
    if (options_.on_response) options_.on_response(method, r.ok() ? r->status : 0);
    if (!r.ok()) return r;
    if (call.is_manifest) RecordRateLimit(r->headers);
    if (!IsRedirect(r->status)) return r;
    std::string location = r->headers.Get("Location");
    if (location.empty()) return r;
    std::string next = ResolveUrl(url, location);
    if (!call.cross_origin_redirects && UrlOrigin(next) != ToLower(origin)) {
      return Unavailable(registry_ + " redirected " + call.url + " to another host, which is " +
                         "only followed for blob downloads");
    }
    url = next;
    if (r->status == 303) method = "GET";
  }
  return Unavailable("too many redirects for " + call.url);
}

bool RegistryClientImpl::MayRetry(int attempt, std::chrono::steady_clock::time_point start) const {
  if (attempt >= options_.retry.max_attempts) return false;
  if (options_.retry.max_elapsed.count() > 0 &&
      std::chrono::steady_clock::now() - start >= options_.retry.max_elapsed) {
    return false;
  }
  return true;
}

Result<HttpResponse> RegistryClientImpl::Execute(const Call& call) {
  RC_RETURN_IF_ERROR(EnsurePinged());
  RC_ASSIGN_OR_RETURN(std::string authorization, Authorization(call.scopes, nullptr));
  bool reauthorized = false;
  const int max_attempts = call.retry ? options_.retry.max_attempts : 1;
  const auto start = std::chrono::steady_clock::now();
  for (int attempt = 1;; ++attempt) {
    auto r = SendOnce(call, authorization);
    if (r.ok() && r->status == 401 && !reauthorized) {
      // Token expired, or the registry wants other scopes / Basic credentials: ask once more,
      // with credentials read afresh (a helper's may have expired, e.g. ECR's 12 h password).
      reauthorized = true;
      if (credentials_ && !authorization.empty()) credentials_->Invalidate(registry_);
      std::optional<AuthChallenge> challenge;
      for (const auto& c : ParseWwwAuthenticate(r->headers.Get("WWW-Authenticate"))) {
        if (c.scheme == "bearer" || c.scheme == "basic") challenge = c;
      }
      if (challenge && (!call.reader || call.body_size.value_or(0) == 0)) {
        RC_ASSIGN_OR_RETURN(authorization, Authorization(call.scopes, &*challenge));
        --attempt;
        continue;
      }
      return r;
    }
    bool retryable =
        !r.ok() ? r.status().code() == Code::kUnavailable : IsRetryableHttpStatus(r->status);
    if (r.ok() && r->status == 429 && !options_.retry.retry_rate_limited) retryable = false;
    if (!retryable || attempt >= max_attempts || !MayRetry(attempt, start)) return r;
    auto delay = options_.retry.Backoff(attempt);
    if (r.ok() && r->status == 429) {
      auto ra = ParseRetryAfter(r->headers.Get("Retry-After"), std::chrono::system_clock::now());
      if (ra) {
        if (*ra > options_.retry.max_retry_after) return r;
        delay = std::max<std::chrono::milliseconds>(delay, *ra);
      }
    }
    std::this_thread::sleep_for(delay);
  }
}

Result<ManifestInfo> RegistryClientImpl::HeadManifest(const std::string& repo,
                                                      const std::string& ref) {
  Call call;
  call.method = "HEAD";
  call.url = "/v2/" + repo + "/manifests/" + ref;
  call.headers = {{"Accept", oci::ManifestAcceptHeader()}};
  call.scopes = ScopesFor(repo);
  call.is_manifest = true;
  RC_ASSIGN_OR_RETURN(HttpResponse r, Execute(call));
  if (r.status != 200) {
    return StatusFromResponse(r, "HEAD " + registry_ + "/" + repo + ":" + ref);
  }
  std::string digest_header = r.headers.Get("Docker-Content-Digest");
  if (digest_header.empty()) {
    // A registry that omits the digest on HEAD: fall back to GET (counts as a pull on Hub).
    RC_ASSIGN_OR_RETURN(FetchedManifest m, GetManifest(repo, ref));
    return m.info;
  }
  auto digest = oci::Digest::Parse(digest_header);
  if (!digest.ok()) {
    return Unavailable(registry_ + " sent an invalid Docker-Content-Digest: " + digest_header);
  }
  ManifestInfo info;
  info.digest = *digest;
  info.media_type = std::string(oci::BaseMediaType(r.headers.Get("Content-Type")));
  info.size = ParseUint(r.headers.Get("Content-Length")).value_or(0);
  return info;
}

Result<FetchedManifest> RegistryClientImpl::GetManifest(const std::string& repo,
                                                        const std::string& ref) {
  Call call;
  call.url = "/v2/" + repo + "/manifests/" + ref;
  call.headers = {{"Accept", oci::ManifestAcceptHeader()}};
  call.scopes = ScopesFor(repo);
  call.is_manifest = true;
  RC_ASSIGN_OR_RETURN(HttpResponse r, Execute(call));
  const std::string what =
      registry_ + "/" + repo + (ref.find(':') != std::string::npos ? "@" : ":") + ref;
  if (r.status != 200) return StatusFromResponse(r, "GET manifest " + what);
  if (r.body.size() > oci::kMaxManifestBytes) {
    return Unavailable("manifest " + what + " is larger than 4 MiB");
  }
  FetchedManifest m;
  m.bytes = std::move(r.body);
  m.info.media_type = std::string(oci::BaseMediaType(r.headers.Get("Content-Type")));
  m.info.size = m.bytes.size();
  auto ref_digest = oci::Digest::Parse(ref);
  auto algo = ref_digest.ok() ? ref_digest->algorithm() : oci::DigestAlgorithm::kSha256;
  m.info.digest = oci::Digest::Of(m.bytes, algo);
  if (ref_digest.ok() && !(m.info.digest == *ref_digest)) {
    return Integrity("manifest " + what + " hashes to " + m.info.digest.str());
  }
  std::string header = r.headers.Get("Docker-Content-Digest");
  if (!header.empty()) {
    auto hd = oci::Digest::Parse(header);
    if (hd.ok() && hd->algorithm() == algo && !(*hd == m.info.digest)) {
      return Integrity("manifest " + what + " hashes to " + m.info.digest.str() +
                       " but the registry says " + header);
    }
  }
  return m;
}

Result<std::optional<uint64_t>> RegistryClientImpl::StatBlob(const std::string& repo,
                                                             const oci::Digest& digest) {
  Call call;
  call.method = "HEAD";
  call.url = BlobUrl(repo, digest);
  call.scopes = ScopesFor(repo);
  RC_ASSIGN_OR_RETURN(HttpResponse r, Execute(call));
  if (r.status == 404) return std::optional<uint64_t>();
  if (r.status != 200) return StatusFromResponse(r, "HEAD blob " + digest.str());
  return std::optional<uint64_t>(ParseUint(r.headers.Get("Content-Length")).value_or(0));
}

Status RegistryClientImpl::GetBlob(const std::string& repo, const oci::Descriptor& blob,
                                   const std::function<Status(const char*, size_t)>& sink) {
  return DownloadBlob(repo, blob.digest, blob.size, nullptr, sink);
}

Status RegistryClientImpl::FetchBlob(const std::string& repo, const oci::Digest& digest,
                                     const std::function<Status(uint64_t size)>& on_size,
                                     const std::function<Status(const char*, size_t)>& sink) {
  return DownloadBlob(repo, digest, std::nullopt, on_size, sink);
}

Status RegistryClientImpl::DownloadBlob(const std::string& repo, const oci::Digest& digest,
                                        std::optional<uint64_t> size,
                                        const std::function<Status(uint64_t size)>& on_size,
                                        const std::function<Status(const char*, size_t)>& sink) {
  oci::DigestHasher hasher(digest.algorithm());
  uint64_t received = 0;  // verified-in-order bytes handed to the sink
  int failures = 0;
  Status last;
  // Each pass resumes where the previous one stopped; progress resets the failure budget.
  while (true) {
    uint64_t skip = 0;  // bytes to drop when the server ignored our Range
    uint64_t at_start = received;
    Call call;
    call.url = BlobUrl(repo, digest);
    call.scopes = ScopesFor(repo);
    call.retry = false;  // this loop retries, resuming with Range instead of starting over
    call.cross_origin_redirects = true;  // CDNs and object stores serve the bytes
    if (received > 0) call.headers.push_back({"Range", "bytes=" + std::to_string(received) + "-"});
    call.on_headers = [&](long status, const HttpHeaders& headers) -> Status {
      if (received > 0 && status == 200) skip = received;  // full body again
      std::optional<uint64_t> total;
      if (status == 200) {
        total = ParseUint(headers.Get("Content-Length"));
      } else if (status == 206) {
        std::string cr = headers.Get("Content-Range");
        if (!StartsWith(cr, "bytes " + std::to_string(received) + "-")) {
          return Unavailable("registry answered a resume with Content-Range '" + cr + "'");
        }
        size_t slash = cr.rfind('/');
        if (slash != std::string::npos) total = ParseUint(cr.substr(slash + 1));
      }
      if (!size) {
        // The size comes from the registry's own answer for this digest, never from a
        // descriptor someone else wrote.
        if (!total) return Unavailable("registry sent blob " + digest.str() + " without a length");
        size = *total;
        if (on_size) RC_RETURN_IF_ERROR(on_size(*size));
      } else if (total && *total != *size) {
        return Integrity("blob " + digest.str() + " is " + std::to_string(*total) +
                         " bytes upstream, not the " + std::to_string(*size) + " expected");
      }
      return Status::Ok();
    };
    BodySink wrapped = [&](const char* data, size_t n) -> Status {
      if (skip > 0) {
        size_t drop = static_cast<size_t>(std::min<uint64_t>(skip, n));
        skip -= drop;
        data += drop;
        n -= drop;
        if (n == 0) return Status::Ok();
      }
      if (!size || received + n > *size) {
        return Integrity("blob " + digest.str() + " is larger than its declared " +
                         std::to_string(size.value_or(0)) + " bytes");
      }
      hasher.Update(data, n);
      received += n;
      return sink(data, n);
    };
    call.sink = &wrapped;
    auto r = Execute(call);
    if (r.ok() && (r->status == 200 || r->status == 206)) {
      // An empty body never triggers on_headers (it runs before the first body byte).
      if (!size && received == 0 && ParseUint(r->headers.Get("Content-Length")) == uint64_t{0}) {
        size = 0;
        if (on_size) RC_RETURN_IF_ERROR(on_size(0));
      }
      if (size && received == *size) break;
      last = Unavailable("blob " + digest.str() + " ended after " + std::to_string(received) +
                         " of " + std::to_string(size.value_or(0)) + " bytes");
    } else if (r.ok()) {
      Status s = StatusFromResponse(*r, "GET blob " + digest.str());
      if (s.code() != Code::kUnavailable && s.code() != Code::kRateLimited) return s;
      if (s.code() == Code::kRateLimited && !options_.retry.retry_rate_limited) return s;
      last = s;
    } else {
      if (r.status().code() != Code::kUnavailable) return r.status();
      last = r.status();
    }
    if (received > at_start) failures = 0;
    if (++failures >= options_.retry.max_attempts) {
      return Status(last.code(),
                    last.message() + " (gave up after " + std::to_string(failures) + " attempts)");
    }
    std::this_thread::sleep_for(options_.retry.Backoff(failures));
  }
  oci::Digest got = hasher.Finish();
  if (!(got == digest)) {
    return Integrity("blob " + digest.str() + " from " + registry_ + "/" + repo + " hashes to " +
                     got.str() + "; the source served corrupted content");
  }
  return Status::Ok();
}

Result<UploadTarget> RegistryClientImpl::StartUpload(const std::string& repo,
                                                     const oci::Digest& digest,
                                                     const std::string& mount_from) {
  Call call;
  call.method = "POST";
  call.url = "/v2/" + repo + "/blobs/uploads/";
  call.scopes = ScopesFor(repo);
  if (!mount_from.empty()) {
    call.url += "?mount=" + digest.str() + "&from=" + mount_from;
    call.scopes.push_back("repository:" + mount_from + ":pull");
  }
  RC_ASSIGN_OR_RETURN(HttpResponse r, Execute(call));
  UploadTarget t;
  if (r.status == 201 && !mount_from.empty()) {
    t.mounted = true;
    return t;
  }
  if (r.status != 202) {
    Status s = StatusFromResponse(r, "starting upload to " + registry_ + "/" + repo);
    if (s.code() == Code::kNotFound) {
      return NotFound("repository " + registry_ + "/" + repo + kRepositoryMissing +
                      " (ECR: create "
                      "it first, e.g. `aws ecr create-repository --repository-name " +
                      repo + "`)");
    }
    return s;
  }
  std::string location = r.headers.Get("Location");
  if (location.empty()) return Unavailable("registry accepted an upload without a Location");
  std::string origin;
  {
    std::lock_guard<std::mutex> lock(mu_);
    origin = origin_;
  }
  t.location = ResolveUrl(origin + call.url, location);
  t.chunk_min_length = ParseUint(r.headers.Get("OCI-Chunk-Min-Length")).value_or(0);
  return t;
}

Status RegistryClientImpl::CompleteUpload(const std::string& repo, const UploadTarget& target,
                                          const oci::Digest& digest, uint64_t size,
                                          const BodyReader& reader, UploadMode mode) {
  if (target.mounted) return Status::Ok();
  const std::string what = "uploading " + digest.str() + " to " + registry_ + "/" + repo;
  std::string location = target.location;
  if (mode == UploadMode::kChunked || target.chunk_min_length > 0) {
    const uint64_t chunk = std::max<uint64_t>(target.chunk_min_length, 8ull << 20);
    uint64_t offset = 0;
    while (offset < size) {
      uint64_t n = std::min(chunk, size - offset);
      uint64_t left = n;
      Call call;
      call.method = "PATCH";
      call.url = location;
      call.scopes = ScopesFor(repo);
      call.retry = false;
      call.headers = {
          {"Content-Type", "application/octet-stream"},
          {"Content-Range", std::to_string(offset) + "-" + std::to_string(offset + n - 1)}};
      call.body_size = n;
      call.reader = [&](char* buf, size_t max) -> Result<size_t> {
        if (left == 0) return size_t{0};
        auto got = reader(buf, static_cast<size_t>(std::min<uint64_t>(max, left)));
        if (got.ok()) left -= *got;
        return got;
      };
      RC_ASSIGN_OR_RETURN(HttpResponse r, Execute(call));
      if (r.status != 202)
        return StatusFromResponse(r, what + " (chunk at " + std::to_string(offset) + ")");
      std::string next = r.headers.Get("Location");
      if (!next.empty()) location = ResolveUrl(location, next);
      offset += n;
    }
    Call done;
    done.method = "PUT";
    done.url = WithQuery(location, "digest=" + digest.str());
    done.scopes = ScopesFor(repo);
    done.headers = {{"Content-Type", "application/octet-stream"}};
    done.body_size = 0;
    RC_ASSIGN_OR_RETURN(HttpResponse r, Execute(done));
    if (r.status != 201) return StatusFromResponse(r, what);
    return Status::Ok();
  }
  Call call;
  call.method = "PUT";
  call.url = WithQuery(location, "digest=" + digest.str());
  call.scopes = ScopesFor(repo);
  call.retry = false;
  call.headers = {{"Content-Type", "application/octet-stream"}};
  call.reader = reader;
  call.body_size = size;
  if (size == 0) call.reader = [](char*, size_t) -> Result<size_t> { return size_t{0}; };
  RC_ASSIGN_OR_RETURN(HttpResponse r, Execute(call));
  if (r.status == 413) return Unsupported(what + ": registry refused a monolithic upload (413)");
  if (r.status != 201) return StatusFromResponse(r, what);
  return Status::Ok();
}

void RegistryClientImpl::CancelUpload(const UploadTarget& target) {
  if (target.mounted || target.location.empty()) return;
  Call call;
  call.method = "DELETE";
  call.url = target.location;
  call.retry = false;
  (void)Execute(call);
}

Status RegistryClientImpl::DeleteBlob(const std::string& repo, const oci::Digest& digest) {
  Call call;
  call.method = "DELETE";
  call.url = BlobUrl(repo, digest);
  call.scopes = {"repository:" + repo + ":delete"};
  RC_ASSIGN_OR_RETURN(HttpResponse r, Execute(call));
  if (r.status == 202 || r.status == 200 || r.status == 204) return Status::Ok();
  Status s = StatusFromResponse(r, "DELETE blob " + registry_ + "/" + repo + "@" + digest.str());
  if (r.status == 405) return Unsupported(s.message());
  return s;
}

Status RegistryClientImpl::PutManifest(const std::string& repo, const std::string& ref,
                                       const std::string& media_type, const std::string& bytes) {
  Call call;
  call.method = "PUT";
  call.url = "/v2/" + repo + "/manifests/" + ref;
  call.scopes = ScopesFor(repo);
  call.headers = {{"Content-Type", media_type}};
  call.body = bytes;
  call.body_size = bytes.size();
  RC_ASSIGN_OR_RETURN(HttpResponse r, Execute(call));
  if (r.status == 201 || r.status == 200) return Status::Ok();
  Status s = StatusFromResponse(r, "PUT manifest " + registry_ + "/" + repo + ":" + ref);
  if (r.body.find("TAG_INVALID") != std::string::npos ||
      r.body.find("ImageTagAlreadyExists") != std::string::npos) {
    return Status(Code::kAlreadyExists, s.message());
  }
  if (s.code() == Code::kNotFound && r.body.find("NAME_UNKNOWN") != std::string::npos) {
    return NotFound("repository " + registry_ + "/" + repo +
                    " does not exist (ECR does not create repositories on push; create it first)");
  }
  return s;
}

Result<HttpResponse> RegistryClientImpl::GetRaw(const std::string& repo,
                                                const std::string& path_and_query) {
  Call call;
  call.url = "/v2/" + repo + "/" + path_and_query;
  call.scopes = ScopesFor(repo);
  return Execute(call);
}

Status WithRetryAfter(const Status& status, int64_t seconds) {
  if (status.ok() || seconds <= 0) return status;
  return Status(status.code(), status.message() + "; retry after " + std::to_string(seconds));
}

int64_t RetryAfterSeconds(const Status& status) {
  if (status.code() != Code::kRateLimited && status.code() != Code::kUnavailable) return 0;
  const std::string key = "; retry after ";
  size_t at = status.message().rfind(key);
  if (at == std::string::npos) return 0;
  size_t start = at + key.size();
  size_t end = start;
  while (end < status.message().size() &&
         std::isdigit(static_cast<unsigned char>(status.message()[end])))
    ++end;
  return static_cast<int64_t>(ParseUint(status.message().substr(start, end - start)).value_or(0));
}

Result<TagList> RegistryClientImpl::ListTags(const std::string& repo) {
  RC_RETURN_IF_ERROR(EnsurePinged());
  std::string origin;
  {
    std::lock_guard<std::mutex> lock(mu_);
    origin = origin_;
  }
  TagListing listing(registry_ + "/" + repo, origin, repo, std::chrono::steady_clock::now());
  // A bound passed mid-page aborts the transfer; kAborted so that Execute does not retry it.
  Status bound;
  const BodySink sink = [&](const char* data, size_t size) {
    bound = listing.Receive(std::string_view(data, size), std::chrono::steady_clock::now());
    return bound.ok() ? Status::Ok() : Status(Code::kAborted, bound.message());
  };
  while (!listing.next_page().empty()) {
    Call call;
    call.url = listing.next_page();
    call.scopes = ScopesFor(repo);
    call.sink = &sink;
    call.on_headers = [&](long, const HttpHeaders&) {
      listing.RestartPage();
      return Status::Ok();
    };
    auto r = Execute(call);
    if (!bound.ok()) return bound;
    if (!r.ok()) return r.status().WithContext("listing tags of " + registry_ + "/" + repo);
    if (r->status != 200)
      return StatusFromResponse(*r, "listing tags of " + registry_ + "/" + repo);
    RC_RETURN_IF_ERROR(
        listing.EndPage(r->headers.GetAll("Link"), std::chrono::steady_clock::now()));
  }
  return std::move(listing).Take();
}

}  // namespace regcache::upstream
