// Where registry credentials come from, in docker's order:
//   1. explicit credentials (--src-creds / --dest-creds, or a sync file),
//   2. ~/.docker/config.json (or $DOCKER_CONFIG/config.json) "credHelpers" for the host,
//   3. its "credsStore",
//   4. its "auths" entry for the host.
// Helpers run as `docker-credential-<name> get` with the server URL on stdin, so
// docker-credential-ecr-login serves ECR, and so on.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "base/status.h"
#include "upstream/auth.h"

namespace regcache::upstream {

// How long a credential read from config.json or a helper is reused before the source is read
// again: short enough that a rotated token (ECR's last 12 h) or an edited config.json is picked
// up without a restart.
inline constexpr std::chrono::milliseconds kDefaultCredentialTtl = std::chrono::minutes(5);
// How long a credential helper may run before it is killed.
inline constexpr std::chrono::milliseconds kDefaultCredentialHelperTimeout =
    std::chrono::seconds(10);

// The server URL docker uses for a registry in config keys and helper calls: Docker Hub is
// "https://index.docker.io/v1/", everything else its host[:port].
std::string DockerConfigServerKey(const std::string& registry);

// Runs `docker-credential-<helper> get` with `server_url` on stdin; safe to call from many
// threads at once. On success returns the helper's credentials, or empty Credentials when the
// helper says it has none. Fails with kUnauthenticated "... is not installed" when the program is
// not on PATH (or exits 127), kUnauthenticated with the helper's message when it fails otherwise
// or prints something that is not JSON, and kUnavailable "credential helper docker-credential-X
// timed out after N s" when it runs longer than `timeout` (it and its process group are then
// killed and reaped); kUnavailable "could not start ..." when spawning fails otherwise, and
// kIoError when no pipe can be made. Reads at most 1 MiB of each of its stdout and stderr; leaks
// no fds and leaves no zombie on any path.
Result<Credentials> RunCredentialHelper(
    const std::string& helper, const std::string& server_url,
    std::chrono::milliseconds timeout = kDefaultCredentialHelperTimeout);

struct CredentialResolverOptions {
  // Lifetime of a cached result of config.json or a helper; explicit credentials never expire.
  std::chrono::milliseconds ttl = kDefaultCredentialTtl;
  std::chrono::milliseconds helper_timeout = kDefaultCredentialHelperTimeout;
};

// Thread-safe. No lock is held while a helper runs: concurrent Resolve calls for one registry
// share a single helper run, and other registries are never blocked by it.
class CredentialResolver {
 public:
  // `docker_config_dir` empty: $DOCKER_CONFIG, else $HOME/.docker.
  explicit CredentialResolver(std::string docker_config_dir = "",
                              CredentialResolverOptions options = {});

  // Credentials that win over everything for one registry (normalized name). They never expire
  // and Invalidate leaves them alone.
  void SetExplicit(const std::string& registry, Credentials credentials);

  // Credentials for a normalized registry name; empty Credentials means anonymous. A success is
  // cached for options.ttl (counted from when the source was read); a failure is not cached, so
  // the next call tries again. Fails only when a configured source is broken (unparsable
  // config.json, failing or timed-out helper), with a message naming it; a caller that joined
  // another caller's helper run gets that run's result.
  Result<Credentials> Resolve(const std::string& registry);

  // Drops the cached credentials of `registry` so the next Resolve reads config.json and runs the
  // helper again. The registry client calls it when an upstream answers 401 to the resolved
  // credentials (e.g. a revoked or rotated token). A helper run already in progress is not
  // affected: it started after the rejected credentials were cached, so its result is newer.
  void Invalidate(const std::string& registry);

 private:
  struct Cached {
    Credentials credentials;
    std::chrono::steady_clock::time_point expires_at;
  };
  // One in-progress read of the sources for a registry; callers arriving meanwhile wait for it.
  struct Flight {
    bool done = false;
    Result<Credentials> result = Credentials{};
  };

  Result<Credentials> ResolveUncached(const std::string& registry);

  std::string config_path_;
  const CredentialResolverOptions options_;
  std::mutex mu_;
  std::condition_variable flight_done_;  // signalled (under mu_) whenever a Flight completes
  std::map<std::string, Credentials> explicit_;
  std::map<std::string, Cached> cache_;
  std::map<std::string, std::shared_ptr<Flight>> flights_;
};

}  // namespace regcache::upstream
