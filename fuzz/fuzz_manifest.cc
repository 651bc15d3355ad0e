// Fuzzes manifest parsing. The first input byte picks the Content-Type ('0' OCI manifest, '1' OCI
// index, '2' docker schema2, '3' docker manifest list, '4' none; other bytes wrap around), the
// rest is the manifest body. Parsed indexes also go through FilterIndex, whose output must parse
// again with the same children.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "check.h"
#include "oci/manifest.h"

namespace oci = regcache::oci;

namespace {

constexpr std::string_view kContentTypes[] = {oci::kOciManifest, oci::kOciIndex,
                                              oci::kDockerManifestV2, oci::kDockerManifestList, ""};

void CheckDescriptor(const oci::Descriptor& d) {
  FUZZ_CHECK(!d.digest.empty());
  FUZZ_CHECK(oci::Digest::Parse(d.digest.str()).ok());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view content_type = kContentTypes[static_cast<uint8_t>(data[0] - '0') % 5];
  std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);

  auto m = oci::ParseManifest(bytes, content_type);
  if (!m.ok()) return 0;

  FUZZ_CHECK(oci::IsManifestMediaType(m->media_type));
  FUZZ_CHECK(m->is_index == oci::IsIndexMediaType(m->media_type));
  if (!content_type.empty()) FUZZ_CHECK(m->media_type == content_type);
  if (m->subject) CheckDescriptor(*m->subject);
  if (m->is_index) {
    FUZZ_CHECK(!m->config && m->layers.empty());
  } else {
    FUZZ_CHECK(m->config && m->manifests.empty());
  }
  for (const auto& d : m->manifests) CheckDescriptor(d);
  for (const auto& d : m->layers) CheckDescriptor(d);
  auto blobs = m->Blobs();
  FUZZ_CHECK(blobs.size() <= m->layers.size() + (m->config ? 1 : 0));
  for (const auto& b : blobs) FUZZ_CHECK(!b.IsNonDistributable());

  if (m->is_index) {
    std::vector<oci::Digest> keep;
    for (const auto& d : m->manifests) keep.push_back(d.digest);
    auto filtered = oci::FilterIndex(bytes, m->media_type, keep);
    FUZZ_CHECK(filtered.ok());
    auto again = oci::ParseManifest(*filtered, m->media_type);
    FUZZ_CHECK(again.ok());
    FUZZ_CHECK(again->is_index && again->manifests.size() == m->manifests.size());
    for (size_t i = 0; i < m->manifests.size(); ++i) {
      FUZZ_CHECK(again->manifests[i].digest == m->manifests[i].digest);
      FUZZ_CHECK(again->manifests[i].size == m->manifests[i].size);
    }
    // Keeping nothing yields a valid, empty index.
    auto none = oci::FilterIndex(bytes, m->media_type, {});
    FUZZ_CHECK(none.ok());
    auto empty = oci::ParseManifest(*none, m->media_type);
    FUZZ_CHECK(empty.ok() && empty->manifests.empty());
  }
  return 0;
}
