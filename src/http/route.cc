#include "http/route.h"

#include <algorithm>

#include "base/strings.h"
#include "oci/digest.h"
#include "oci/reference.h"

namespace regcache::http {
namespace {

std::map<std::string, std::string> ParseQuery(std::string_view q) {
  std::map<std::string, std::string> out;
  for (const auto& part : Split(q, '&')) {
    if (part.empty()) continue;
    size_t eq = part.find('=');
    std::string k = part.substr(0, eq);
    std::string v = eq == std::string::npos ? "" : part.substr(eq + 1);
    // Values are percent-decoded (containerd sends ns=docker.io, others may encode).
    std::string decoded;
    for (size_t i = 0; i < v.size(); ++i) {
      if (v[i] == '%' && i + 2 < v.size() && std::isxdigit(static_cast<unsigned char>(v[i + 1])) &&
          std::isxdigit(static_cast<unsigned char>(v[i + 2]))) {
        decoded.push_back(static_cast<char>(std::stoi(v.substr(i + 1, 2), nullptr, 16)));
        i += 2;
      } else {
        decoded.push_back(v[i] == '+' ? ' ' : v[i]);
      }
    }
    out[k] = decoded;
  }
  return out;
}

}  // namespace

std::string TagListQuery::String() const {
  std::string out;
  if (n) out = "?n=" + std::to_string(*n);
  if (!last.empty())
    out += (out.empty() ? "?last=" : "&last=") + last;  // tag characters need no encoding
  return out;
}

Result<TagListQuery> ParseTagListQuery(const std::map<std::string, std::string>& query) {
  TagListQuery out;
  if (auto n = query.find("n"); n != query.end() && !n->second.empty()) {
    const std::string& v = n->second;
    if (!std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return InvalidArgument("invalid number of results requested: n='" + v +
                             "' is not a non-negative integer");
    }
    size_t first = v.find_first_not_of('0');
    std::string_view digits =
        first == std::string::npos ? std::string_view() : std::string_view(v).substr(first);
    uint64_t value = 0;
    if (digits.size() > 6) {
      value = kMaxTagListPage;  // far beyond it, however many digits
    } else {
      for (char c : digits) value = value * 10 + static_cast<uint64_t>(c - '0');
    }
    out.n = static_cast<uint32_t>(std::min<uint64_t>(value, kMaxTagListPage));
  }
  if (auto last = query.find("last"); last != query.end() && !last->second.empty()) {
    if (!oci::IsValidTag(last->second)) {
      return InvalidArgument("invalid pagination: last='" + last->second + "' is not a tag");
    }
    out.last = last->second;
  }
  return out;
}

Result<Route> ParseTarget(std::string_view target, Endpoint* endpoint_on_error) {
  *endpoint_on_error = Endpoint::kOther;
  Route r;
  size_t q = target.find('?');
  std::string_view path = target.substr(0, q);
  if (q != std::string_view::npos) {
    r.raw_query = std::string(target.substr(q + 1));
    r.query = ParseQuery(r.raw_query);
  }
  if (path == "/healthz") {
    r.kind = RouteKind::kHealth;
    return r;
  }
  if (path == "/readyz") {
    r.kind = RouteKind::kReady;
    return r;
  }
  if (path == "/metrics") {
    r.kind = RouteKind::kMetrics;
    return r;
  }
  if (path == "/") {
    r.kind = RouteKind::kStatus;
    return r;
  }
  if (path == "/v2" || path == "/v2/") {
    r.kind = RouteKind::kBase;
    return r;
  }
  if (!StartsWith(path, "/v2/")) return NotFound("no such endpoint");
  // Registry paths never need percent-encoding; an encoded slash or dot is an attack or a bug.
  if (path.find('%') != std::string_view::npos) {
    return InvalidArgument("encoded characters are not allowed in registry paths");
  }
  std::string_view rest = path.substr(4);
  auto take = [&](std::string_view marker, RouteKind kind, Endpoint ep) -> bool {
    size_t at = rest.rfind(marker);
    if (at == std::string_view::npos || at == 0) return false;
    r.kind = kind;
    r.endpoint = ep;
    r.name = std::string(rest.substr(0, at));
    r.reference = std::string(rest.substr(at + marker.size()));
    return true;
  };
  // The common case first: ".../<manifests|blobs|referrers>/<reference>" (a reference has no
  // '/'), found from the last two slashes without searching for each marker.
  size_t last = rest.rfind('/');
  size_t word_at = last == std::string_view::npos || last == 0 ? std::string_view::npos
                                                               : rest.rfind('/', last - 1);
  std::string_view word = word_at == std::string_view::npos || word_at == 0
                              ? std::string_view()
                              : rest.substr(word_at + 1, last - word_at - 1);
  auto split_at = [&](RouteKind kind, Endpoint ep) {
    r.kind = kind;
    r.endpoint = ep;
    r.name = std::string(rest.substr(0, word_at));
    r.reference = std::string(rest.substr(last + 1));
  };
  if (word == "manifests") {
    split_at(RouteKind::kManifest, Endpoint::kManifest);
  } else if (word == "blobs" && rest.substr(last + 1) != "uploads") {
    split_at(RouteKind::kBlob, Endpoint::kBlob);
  } else if (word == "referrers") {
    split_at(RouteKind::kReferrers, Endpoint::kReferrers);
  } else if (EndsWith(rest, "/tags/list")) {
    r.kind = RouteKind::kTags;
    r.endpoint = Endpoint::kTags;
    r.name = std::string(rest.substr(0, rest.size() - 10));
  } else if (rest.find("/blobs/uploads") != std::string_view::npos) {
    r.kind = RouteKind::kUpload;
    r.name = std::string(rest.substr(0, rest.find("/blobs/uploads")));
    return r;
  } else if (take("/manifests/", RouteKind::kManifest, Endpoint::kManifest) ||
             take("/blobs/", RouteKind::kBlob, Endpoint::kBlob) ||
             take("/referrers/", RouteKind::kReferrers, Endpoint::kReferrers)) {
  } else {
    return NotFound("no such endpoint");
  }
  *endpoint_on_error = r.endpoint;
  if (!AllParts(r.name, '/', [](std::string_view part) {
        return !(part.empty() || part == "." || part == "..");
      })) {
    *endpoint_on_error = Endpoint::kOther;
    return InvalidArgument("invalid repository name '" + r.name + "'");
  }
  if (r.kind == RouteKind::kManifest) {
    if (r.reference.find(':') != std::string::npos) {
      auto d = oci::Digest::Parse(r.reference);
      if (!d.ok()) return InvalidArgument(d.status().message());
      r.digest = std::move(*d);
    } else if (!oci::IsValidTag(r.reference)) {
      // No manifest can have this name: a pull of it is answered as any unknown manifest is
      // (404, as the OCI conformance suite and distribution expect), without asking an upstream.
      return NotFound("manifest unknown: '" + r.reference + "' is not a valid tag");
    }
  } else if (r.kind == RouteKind::kBlob || r.kind == RouteKind::kReferrers) {
    auto d = oci::Digest::Parse(r.reference);
    if (!d.ok()) {
      *endpoint_on_error = Endpoint::kBlob;  // DIGEST_INVALID
      return InvalidArgument(d.status().message());
    }
    r.digest = std::move(*d);
  } else if (r.kind == RouteKind::kTags) {
    RC_ASSIGN_OR_RETURN(r.tag_list, ParseTagListQuery(r.query));
  }
  return r;
}

Result<UpstreamChoice> ChooseUpstream(
    const Route& route, const std::function<std::string(const std::string&)>& find,
    const std::string& default_upstream,
    const std::function<bool(const std::string&)>& is_docker_hub) {
  UpstreamChoice c;
  std::string name = route.name;
  auto ns = route.query.find("ns");
  if (ns != route.query.end()) {
    // Decoded bytes of a query value: anything but a registry host is refused before it can
    // reach a log line or a header.
    if (!oci::IsValidRegistryHost(ns->second)) {
      return InvalidArgument("invalid ns: not a registry host name");
    }
    c.upstream = find(ns->second);
    if (c.upstream.empty()) return NotFound("upstream '" + ns->second + "' is not configured here");
    c.ns = c.upstream;
  } else {
    size_t slash = name.find('/');
    std::string first = slash == std::string::npos ? "" : name.substr(0, slash);
    std::string prefixed = first.empty() ? "" : find(first);
    if (!prefixed.empty()) {
      c.upstream = prefixed;
      name = name.substr(slash + 1);
    } else if (oci::LooksLikeRegistryHost(first)) {
      // A mirror entry for a registry that is not configured (cache:5000/quay.io/...): never
      // forward it to the default upstream as a repository named "quay.io/...".
      return NotFound("upstream '" + first + "' is not configured here");
    } else {
      c.upstream = default_upstream;
    }
  }
  if (!oci::IsValidRepository(name)) {
    return InvalidArgument("invalid repository name '" + name + "'");
  }
  if (is_docker_hub(c.upstream) && name.find('/') == std::string::npos) name = "library/" + name;
  c.repository = name;
  return c;
}

}  // namespace regcache::http
