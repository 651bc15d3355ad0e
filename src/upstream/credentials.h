// Where registry credentials come from, in docker's order:
//   1. explicit credentials (--src-creds / --dest-creds, or a sync file),
//   2. ~/.docker/config.json (or $DOCKER_CONFIG/config.json) "credHelpers" for the host,
//   3. its "credsStore",
//   4. its "auths" entry for the host.
// Helpers run as `docker-credential-<name> get` with the server URL on stdin, so
// docker-credential-ecr-login serves ECR, and so on.
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "base/status.h"
#include "upstream/auth.h"

namespace regcache::upstream {

// The server URL docker uses for a registry in config keys and helper calls: Docker Hub is
// "https://index.docker.io/v1/", everything else its host[:port].
std::string DockerConfigServerKey(const std::string& registry);

// Runs `docker-credential-<helper> get`. Returns empty Credentials when the helper says it has
// none; kUnauthenticated with the helper's message when it fails otherwise.
Result<Credentials> RunCredentialHelper(const std::string& helper, const std::string& server_url);

class CredentialResolver {
 public:
  // `docker_config_dir` empty: $DOCKER_CONFIG, else $HOME/.docker.
  explicit CredentialResolver(std::string docker_config_dir = "");

  // Credentials that win over everything for one registry (normalized name).
  void SetExplicit(const std::string& registry, Credentials credentials);

  // Credentials for a normalized registry name; empty Credentials means anonymous. Results of
  // helpers are cached for the life of the resolver. Fails only when a configured source is
  // broken (unparsable config.json, failing helper), with a message naming it.
  Result<Credentials> Resolve(const std::string& registry);

 private:
  Result<Credentials> ResolveUncached(const std::string& registry);
  std::string config_path_;
  std::mutex mu_;
  std::map<std::string, Credentials> explicit_;
  std::map<std::string, Credentials> cache_;
};

}  // namespace regcache::upstream
