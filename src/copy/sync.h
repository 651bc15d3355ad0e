// `regcache sync FILE`: keep a list of images mirrored. The file (YAML) names sources, tags (a
// list or a regex over the source's tag list), destinations (a reference or a prefix), platforms,
// and per-registry credentials and TLS settings; see docs/sync.md for the format. Also the mirror
// prefix shared with `regcache ensure --mirror`.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "copy/client_pool.h"
#include "copy/copier.h"

namespace regcache::copy {

// Where `regcache ensure --mirror PREFIX` and sync's `mirror_prefix` write: "host[:port]/path",
// e.g. "123456789012.dkr.ecr.eu-west-1.amazonaws.com/cache" or "127.0.0.1:5001/cache".
struct MirrorPrefix {
  std::string registry;  // normalized host[:port] (Docker Hub aliases are docker.io)
  std::string path;      // repository path under the registry; may be empty
};

// kInvalidArgument saying what is wrong: a URL scheme, a first component that is not a registry
// host, an invalid path, a tag or digest.
Result<MirrorPrefix> ParseMirrorPrefix(std::string_view text);

// Where `source` goes under `prefix`: repository oci::MirrorRepository(path, source registry,
// source repository) on the prefix's registry, the layout the backing tier of `regcache serve`
// reads; the source's tag, or its digest when it has no tag. kInvalidArgument when the name
// comes out too long.
Result<oci::Reference> MirrorDestination(const MirrorPrefix& prefix, const oci::Reference& source);

struct SyncImageSpec {
  std::string source;
  std::vector<std::string> tags;
  std::string tag_regex;  // RE2 syntax (Go's regexp); a tag matches when the whole of it does
  // Exactly one of the three destination keys is set.
  std::string destination;         // full reference (repo, or repo:tag for a single tag)
  std::string destination_prefix;  // <prefix>/<source repository>:<tag> (flat, older layout)
  std::string mirror_prefix;       // MirrorDestination: <prefix>/<source registry>/<repository>
  std::vector<oci::Platform> platforms;
  bool check_upstream = false;
};

struct RateLimitGuard {
  int64_t min_remaining = -1;  // -1: off
  bool wait = false;           // false: stop
  std::chrono::seconds wait_interval{60};
  std::chrono::seconds max_wait{6 * 3600};
};

struct SyncConfig {
  int parallel = 2;
  int blob_parallel = 4;
  std::map<std::string, RegistrySettings> registries;  // by normalized registry name
  std::vector<SyncImageSpec> images;
  RateLimitGuard ratelimit;
};

// Parses the YAML text. kInvalidArgument naming the field (and image index) on any problem:
// unknown keys, bad references, a tag_regex RE2 refuses, bad platform, bad durations, bad mirror
// prefix, no destination or more than one of destination, destination_prefix and mirror_prefix.
Result<SyncConfig> ParseSyncConfig(const std::string& yaml_text);

// The entries of `listed` (the tag list of `source`, as its registry sent it) that are valid
// tags (oci::IsValidTag) and that `tag_regex` matches in full, in their order, each once. Entries
// that are not tags are dropped before matching, with one line to `log` saying how many and showing
// one, however many there are. Matching takes time linear in a tag's length whatever the pattern.
// kInvalidArgument when RE2 refuses `tag_regex` (ParseSyncConfig has already refused it).
Result<std::vector<std::string>> MatchingTags(const std::string& tag_regex,
                                              std::vector<std::string> listed,
                                              const std::string& source,
                                              const std::function<void(const std::string&)>& log);

struct SyncItem {
  oci::Reference source;
  oci::Reference destination;
  const SyncImageSpec* spec = nullptr;
};

struct SyncOutcome {
  std::string source;  // as shown in the summary
  std::string destination;
  Status status;
  EnsureResult result;
};

class SyncRunner {
 public:
  SyncRunner(ClientPool& clients, const SyncConfig& config);

  // Expands every image into (source, destination) pairs; an image that cannot be expanded
  // (its tag list unreadable, say) becomes a failed outcome in `failures`. For a tag_regex, the
  // entries of the source's tag list that are not valid tags (oci::IsValidTag) are dropped
  // before matching, with one line to `log` per listing that had any.
  std::vector<SyncItem> Expand(std::vector<SyncOutcome>& failures,
                               const std::function<void(const std::string&)>& log);

  // Runs ensure for each item, `parallel` at a time, continuing past failures. With the rate-limit
  // guard on, an item whose source reports fewer remaining pulls than the threshold waits (and
  // re-reads the quota with a free HEAD) or stops the run; items not attempted fail with a clear
  // message. `log` receives one human-readable line per event.
  std::vector<SyncOutcome> Run(const std::vector<SyncItem>& items, bool dry_run,
                               const std::function<void(const std::string&)>& log);

 private:
  // Ok to proceed, or the reason to stop.
  Status GateOnRateLimit(const SyncItem& item, const std::function<void(const std::string&)>& log);

  ClientPool& clients_;
  const SyncConfig& config_;
  std::mutex mu_;
  bool stopped_ = false;
  Status stop_reason_;
};

// The summary table printed at the end of a sync.
std::string FormatSyncSummary(const std::vector<SyncOutcome>& outcomes, bool dry_run);

}  // namespace regcache::copy
