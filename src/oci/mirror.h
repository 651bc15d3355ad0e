// The repository layout of a mirror registry that holds images from many registries under one
// prefix. `regcache serve --backing` reads and writes it, and `regcache ensure --mirror` and
// sync's `mirror_prefix` write it, so one fills what the other serves.
#pragma once

#include <string>
#include <string_view>

namespace regcache::oci {

// "<prefix>/<registry>/<repository>", e.g. ("cache", "docker.io", "library/ruby") ->
// "cache/docker.io/library/ruby". The registry is normalized (every Docker Hub alias is
// docker.io) and made a valid path component: lowercase, with a port's ':' written as '-'
// ("localhost:5000" -> "localhost-5000"). An empty prefix leaves "<registry>/<repository>".
// The caller validates the result with IsValidRepository (a prefix may be anything).
std::string MirrorRepository(std::string_view prefix, std::string_view registry,
                             std::string_view repository);

}  // namespace regcache::oci
