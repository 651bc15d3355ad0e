// Fuzzes request-target routing: ParseTarget on the input as a request target, then
// ChooseUpstream on every parsed route against a fixed set of upstreams, resolved the way
// cache::UpstreamSet::Find does it (configured name, else normalized registry host).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/strings.h"
#include "check.h"
#include "http/route.h"
#include "oci/reference.h"

namespace {

using regcache::http::Endpoint;
using regcache::http::RouteKind;

struct Upstream {
  const char* name;
  const char* registry;
  bool docker_hub;
};
constexpr Upstream kUpstreams[] = {
    {"docker.io", "docker.io", true},
    {"ghcr.io", "ghcr.io", false},
    {"quay", "quay.io", false},
    {"internal", "registry.internal:5443", false},
};

const Upstream* Find(const std::string& name_or_host) {
  for (const auto& u : kUpstreams) {
    if (name_or_host == u.name) return &u;
  }
  std::string normalized = regcache::oci::NormalizeRegistryHost(name_or_host);
  for (const auto& u : kUpstreams) {
    if (normalized == u.registry) return &u;
  }
  return nullptr;
}

bool NoEmptyComponent(std::string_view name) {
  for (const auto& part : regcache::Split(name, '/')) {
    if (part.empty() || part == "." || part == "..") return false;
  }
  return true;
}

bool IsHeaderSafe(std::string_view value) {
  for (unsigned char c : value) {
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view target(reinterpret_cast<const char*>(data), size);
  Endpoint ep = Endpoint::kManifest;
  auto route = regcache::http::ParseTarget(target, &ep);
  if (!route.ok()) return 0;

  const auto& r = *route;
  FUZZ_CHECK(r.raw_query == (target.find('?') == std::string_view::npos
                                 ? std::string_view()
                                 : target.substr(target.find('?') + 1)));
  switch (r.kind) {
    case RouteKind::kBase:
    case RouteKind::kHealth:
    case RouteKind::kReady:
    case RouteKind::kMetrics:
    case RouteKind::kStatus:
      FUZZ_CHECK(r.name.empty());
      return 0;
    case RouteKind::kUpload:
      // Answered 405 without looking at the name; not validated, nothing to route.
      return 0;
    case RouteKind::kManifest:
      FUZZ_CHECK(r.endpoint == Endpoint::kManifest);
      FUZZ_CHECK(regcache::oci::IsValidTag(r.reference) ||
                 regcache::oci::Digest::Parse(r.reference).ok());
      break;
    case RouteKind::kBlob:
    case RouteKind::kReferrers:
      FUZZ_CHECK(regcache::oci::Digest::Parse(r.reference).ok());
      break;
    case RouteKind::kTags: {
      FUZZ_CHECK(r.endpoint == Endpoint::kTags);
      // The cache key and the upstream's query: bounded, header- and URL-safe, and a fixed
      // point (the query it spells parses back to itself).
      const auto& q = r.tag_list;
      FUZZ_CHECK(!q.n || *q.n <= regcache::http::kMaxTagListPage);
      FUZZ_CHECK(q.last.empty() || regcache::oci::IsValidTag(q.last));
      const std::string key = q.String();
      FUZZ_CHECK(key.size() <= 32 + 128);
      auto again = regcache::http::ParseTarget("/v2/x/tags/list" + key, &ep);
      FUZZ_CHECK(again.ok());
      FUZZ_CHECK(again->tag_list.n == q.n && again->tag_list.last == q.last);
      FUZZ_CHECK(again->tag_list.String() == key);
      break;
    }
  }
  // The path is never percent-decoded, and the name is what a repository lookup will use.
  FUZZ_CHECK(!r.name.empty());
  FUZZ_CHECK(NoEmptyComponent(r.name));
  FUZZ_CHECK(r.name.find('%') == std::string::npos);
  FUZZ_CHECK(r.name.find('?') == std::string::npos);

  for (const std::string default_upstream : {"docker.io", "ghcr.io"}) {
    auto choice = regcache::http::ChooseUpstream(
        r,
        [](const std::string& n) {
          const Upstream* u = Find(n);
          return u ? std::string(u->name) : std::string();
        },
        default_upstream,
        [](const std::string& n) {
          const Upstream* u = Find(n);
          return u && u->docker_hub;
        });
    if (!choice.ok()) continue;
    const auto& c = *choice;
    const Upstream* up = Find(c.upstream);
    FUZZ_CHECK(up != nullptr);
    FUZZ_CHECK(c.upstream == up->name);
    FUZZ_CHECK(regcache::oci::IsValidRepository(c.repository));
    FUZZ_CHECK(NoEmptyComponent(c.repository));
    if (up->docker_hub) FUZZ_CHECK(c.repository.find('/') != std::string::npos);
    // The repository is the client's name, minus at most an upstream prefix, plus at most
    // Docker Hub's "library/".
    std::string sent = c.repository;
    if (up->docker_hub && regcache::StartsWith(sent, "library/") && !r.name.ends_with(sent)) {
      sent = sent.substr(8);
    }
    FUZZ_CHECK(r.name == sent || r.name.ends_with("/" + sent));
    // ?ns= is echoed back in the OCI-Namespace response header.
    FUZZ_CHECK(IsHeaderSafe(c.ns));
  }
  return 0;
}
