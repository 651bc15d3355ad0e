// Manifests and indexes: docker v2 schema2, docker manifest list, OCI image manifest, OCI index
// (including artifacts with artifactType/subject). Parsing reads descriptors out of the exact bytes
// received; the bytes themselves are never re-serialized, because the digest is over them.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "oci/digest.h"

namespace regcache::oci {

inline constexpr std::string_view kDockerManifestV2 =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kDockerManifestList =
    "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view kOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kDockerManifestV1 =
    "application/vnd.docker.distribution.manifest.v1+json";
inline constexpr std::string_view kDockerManifestV1Signed =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";

// Manifests larger than this are refused, as distribution does (it caps at 4 MiB).
inline constexpr size_t kMaxManifestBytes = 4 * 1024 * 1024;

// The media type of a Content-Type value, without parameters: "a/b; charset=x" -> "a/b".
std::string_view BaseMediaType(std::string_view content_type);

// The Accept header value that asks a registry for any manifest kind we understand.
std::string ManifestAcceptHeader();

bool IsIndexMediaType(std::string_view media_type);
bool IsImageManifestMediaType(std::string_view media_type);
// Either of the two above.
bool IsManifestMediaType(std::string_view media_type);

struct Platform {
  std::string os;
  std::string architecture;
  std::string variant;
  std::string os_version;

  // "linux/arm64/v8"
  std::string String() const;
  // True if this platform satisfies `want`; an empty variant in `want` matches any variant.
  bool Matches(const Platform& want) const;
};

// Parses "os/arch[/variant]"; kInvalidArgument otherwise.
Result<Platform> ParsePlatform(std::string_view text);

struct Descriptor {
  std::string media_type;
  Digest digest;
  uint64_t size = 0;
  std::optional<Platform> platform;
  std::vector<std::string> urls;
  std::string artifact_type;

  // Foreign/non-distributable layers (Windows base layers) are fetched by clients from `urls`,
  // not from the registry; copiers skip them like docker and skopeo do.
  bool IsNonDistributable() const;
};

struct Manifest {
  std::string media_type;  // the effective media type (field, else Content-Type, else inferred)
  bool is_index = false;
  // Image manifests.
  std::optional<Descriptor> config;
  std::vector<Descriptor> layers;
  // Indexes.
  std::vector<Descriptor> manifests;
  // Both (OCI 1.1).
  std::optional<Descriptor> subject;
  std::string artifact_type;

  // Config then layers, skipping non-distributable ones: the blobs a copy must move.
  std::vector<Descriptor> Blobs() const;
};

// Parses manifest bytes. `content_type` is the Content-Type it arrived with (may be empty or
// generic). Fails with kUnsupported for schema1, kInvalidArgument for anything malformed: not
// JSON, wrong schemaVersion, descriptors without a valid digest/size/mediaType, mediaType field
// disagreeing with a manifest Content-Type, more than kMaxManifestBytes.
Result<Manifest> ParseManifest(std::string_view bytes, std::string_view content_type);

// Builds a new OCI index (or docker manifest list, following `list_media_type`) holding only
// `keep` of `index_bytes`' manifests, each descriptor copied as received. Used by --platform,
// which by design produces a new digest.
Result<std::string> FilterIndex(std::string_view index_bytes, std::string_view list_media_type,
                                const std::vector<Digest>& keep);

}  // namespace regcache::oci
