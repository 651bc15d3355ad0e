// Fuzzes the YAML configuration loaders on the input as YAML text: the serve config
// (app::LoadServeConfig, over the embedded defaults) and the sync file (copy::ParseSyncConfig,
// whose tag_regex must then match without error).
// yaml-cpp reports errors by throwing; both loaders must turn every error into a Status, so any
// exception escaping them is a crash here.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "app/serve_config.h"
#include "check.h"
#include "copy/sync.h"
#include "oci/reference.h"

namespace {

void CheckServeConfig(const std::string& yaml) {
  regcache::app::ServeConfig c;
  if (!regcache::app::LoadServeConfig(yaml, &c).ok()) return;
  FUZZ_CHECK(c.server.io_threads >= 1 && c.server.worker_threads >= 1);
  FUZZ_CHECK(!c.server.host.empty());
  FUZZ_CHECK(c.server.shutdown_grace.count() >= 0 && c.server.idle_timeout.count() >= 0);
  for (const auto& u : c.upstreams) {
    FUZZ_CHECK(u.tag_ttl.count() >= 0);
    for (const auto& rule : u.ttl_rules) FUZZ_CHECK(rule.ttl.count() >= 0);
    for (const auto& pattern : u.allow) FUZZ_CHECK(!pattern.empty());
    for (const auto& pattern : u.deny) FUZZ_CHECK(!pattern.empty());
  }
  // An auth: section that loaded is one the server accepts (the htpasswd file aside).
  if (!c.auth.htpasswd.empty()) FUZZ_CHECK(regcache::http::ValidateAuthOptions(c.auth).ok());
}

void CheckSyncConfig(const std::string& yaml) {
  auto c = regcache::copy::ParseSyncConfig(yaml);
  if (!c.ok()) return;
  FUZZ_CHECK(c->parallel >= 1 && c->parallel <= 64);
  FUZZ_CHECK(c->blob_parallel >= 1 && c->blob_parallel <= 64);
  FUZZ_CHECK(c->ratelimit.wait_interval.count() >= 0 && c->ratelimit.max_wait.count() >= 0);
  for (const auto& [registry, settings] : c->registries) {
    FUZZ_CHECK(regcache::oci::NormalizeRegistryHost(registry) == registry);
  }
  FUZZ_CHECK(!c->images.empty());
  for (const auto& image : c->images) {
    FUZZ_CHECK(regcache::oci::ParseReference(image.source, false).ok());
    int destinations = 0;
    for (const auto* d : {&image.destination, &image.destination_prefix, &image.mirror_prefix}) {
      if (!d->empty()) ++destinations;
    }
    FUZZ_CHECK(destinations == 1);
    if (!image.mirror_prefix.empty()) {
      FUZZ_CHECK(regcache::copy::ParseMirrorPrefix(image.mirror_prefix).ok());
    }
    FUZZ_CHECK(image.tags.empty() || image.tag_regex.empty());
    for (const auto& tag : image.tags) FUZZ_CHECK(regcache::oci::IsValidTag(tag));
    // An accepted tag_regex compiles again at run time and matches the longest tag at once.
    if (!image.tag_regex.empty()) {
      auto matched = regcache::copy::MatchingTags(image.tag_regex, {"v1", std::string(128, 'a')},
                                                  "fuzz", [](const std::string&) {});
      FUZZ_CHECK(matched.ok());
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string yaml(reinterpret_cast<const char*>(data), size);
  CheckServeConfig(yaml);
  CheckSyncConfig(yaml);
  return 0;
}
