// Image references, parsed and normalized the way docker/distribution's ParseNormalizedNamed
// does it, so that `ruby`, `docker.io/library/ruby:latest` and `index.docker.io/library/ruby`
// all name the same thing.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "base/status.h"
#include "oci/digest.h"

namespace regcache::oci {

inline constexpr std::string_view kDockerHub = "docker.io";
inline constexpr std::string_view kDockerHubApiHost = "registry-1.docker.io";
inline constexpr size_t kMaxNameLength = 255;

struct Reference {
  std::string registry;    // normalized: "docker.io", "ghcr.io", "localhost:5000"
  std::string repository;  // "library/ruby"
  std::string tag;         // empty only when a digest is given and no tag
  std::optional<Digest> digest;

  // "docker.io/library/ruby"
  std::string Name() const { return registry + "/" + repository; }
  // Fully qualified "docker.io/library/ruby:3.3@sha256:..".
  std::string String() const;
  // What to put after /manifests/: the digest when there is one, else the tag.
  std::string Identifier() const { return digest ? digest->str() : tag; }
};

// Parses an image reference.
// On success: registry aliases folded (index.docker.io, registry-1.docker.io -> docker.io),
// "library/" added to single-component Docker Hub names, tag "latest" when neither tag nor digest
// is given and `default_tag` is true.
// On failure: kInvalidArgument with a message naming the bad part (registry, repository, tag,
// digest, length, uppercase).
Result<Reference> ParseReference(std::string_view text, bool default_tag = true);

// The host to talk HTTP to for a normalized registry name (docker.io -> registry-1.docker.io).
std::string RegistryApiHost(std::string_view registry);

// Canonical registry name for a host as written by users or in docker config keys:
// "https://index.docker.io/v1/" -> "docker.io", "HTTPS://Ghcr.io/" -> "ghcr.io".
std::string NormalizeRegistryHost(std::string_view host);

// Repository path per the OCI distribution spec (components of [a-z0-9] joined by . _ __ -).
bool IsValidRepository(std::string_view repository);
// Tag: [A-Za-z0-9_][A-Za-z0-9._-]{0,127}.
bool IsValidTag(std::string_view tag);
// Registry host[:port], including [ipv6]:port.
bool IsValidRegistryHost(std::string_view host);
// Whether the first component of a name names a registry host rather than a repository
// (docker's rule: it has a '.' or ':', or is "localhost").
bool LooksLikeRegistryHost(std::string_view component);

}  // namespace regcache::oci
