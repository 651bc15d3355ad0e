// Parsing a registry request path into an endpoint, an upstream and a repository.
//
// Upstream routing, in order: containerd's ?ns=<registry>; a path prefix naming an upstream
// (/v2/docker.io/library/ruby/…, as podman's registries.conf mirrors send); else the default
// upstream (dockerd's registry-mirrors send /v2/library/ruby/…). Docker Hub's library/ rule
// applies to Docker Hub upstreams.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "base/status.h"
#include "http/errors.h"
#include "oci/digest.h"

namespace regcache::http {

enum class RouteKind {
  kBase,
  kManifest,
  kBlob,
  kTags,
  kReferrers,
  kUpload,
  kHealth,
  kReady,
  kMetrics,
  kStatus  // GET / : the HTML status page
};

// A tag-list request's query reduced to what the distribution spec gives meaning to: `n` (a
// page size) and `last` (the tag the page starts after). Anything else (`ns`, which routing has
// used, and parameters nobody defined) is dropped: it reaches neither the cache key nor the
// upstream, so junk can neither multiply cached copies nor get past the cache.
struct TagListQuery {
  std::optional<uint32_t> n;  // absent: the registry's default page (for most, every tag)
  std::string last;           // empty: from the start
  // "", "?n=10", "?last=v1" or "?n=10&last=v1": the cache key, and the upstream's query.
  std::string String() const;
};

// The largest page asked of an upstream; a larger `n` is clamped to it, which the spec allows
// (a registry may return fewer than `n` tags when it sends a Link to the rest).
inline constexpr uint32_t kMaxTagListPage = 10000;

// From Route::query (decoded): kInvalidArgument for an `n` that is not a non-negative decimal
// integer, or a `last` that is not a tag (the spec: "MUST be a proper tag"). An empty `n` or
// `last` counts as absent, as distribution reads them.
Result<TagListQuery> ParseTagListQuery(const std::map<std::string, std::string>& query);

struct Route {
  RouteKind kind = RouteKind::kBase;
  Endpoint endpoint = Endpoint::kOther;
  std::string name;       // repository name as the client sent it (may include an upstream prefix)
  std::string reference;  // tag or digest (manifests), digest (blobs, referrers)
  oci::Digest digest;     // the reference parsed, when it is a digest
  std::map<std::string, std::string> query;
  std::string raw_query;  // without '?', as received
  TagListQuery tag_list;  // kTags: the query's meaningful part
};

// Splits and validates the request target. kInvalidArgument (with the endpoint set so the caller
// can pick the error code) for encoded characters, "..", empty components, a malformed digest,
// or a tag list's invalid `n` or `last` (Endpoint::kTags); kNotFound for unknown paths and for a
// manifest reference that is neither a digest nor a valid tag (endpoint kManifest:
// MANIFEST_UNKNOWN).
Result<Route> ParseTarget(std::string_view target, Endpoint* endpoint_on_error);

struct UpstreamChoice {
  std::string upstream;    // configured name
  std::string repository;  // upstream-side repository ("library/ruby")
  std::string ns;          // with ?ns=: the configured upstream name, echoed in OCI-Namespace
};

// Resolves which upstream a route goes to. `find` maps a routing name or registry host to the
// configured upstream name ("" if none); `is_docker_hub` says whether that upstream is Docker Hub.
// kInvalidArgument for an ?ns= that is not a registry host name, or a bad repository name;
// kNotFound for an ?ns= or a registry-like first path component naming no configured upstream.
Result<UpstreamChoice> ChooseUpstream(const Route& route,
                                      const std::function<std::string(const std::string&)>& find,
                                      const std::string& default_upstream,
                                      const std::function<bool(const std::string&)>& is_docker_hub);

}  // namespace regcache::http
