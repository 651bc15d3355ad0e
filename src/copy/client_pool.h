// Registry clients shared by a run of ensure/sync: one per (registry, role), so tokens and the
// /v2/ ping are reused across images, and source and destination on the same host can still
// use different credentials.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "upstream/registry_client.h"

namespace regcache::copy {

// Per-registry settings from flags or a sync file.
struct RegistrySettings {
  std::optional<upstream::Credentials> credentials;
  bool insecure = false;  // plain HTTP / unverified TLS allowed
  std::string ca_file;
};

enum class Role { kSource, kDestination };

class ClientPool {
 public:
  // `base` holds defaults (retry, timeouts, --insecure-registry list, --ca-file).
  ClientPool(upstream::ClientOptions base, std::string docker_config_dir = "");

  // Settings for one registry (normalized name) and role; call before Get.
  void Configure(const std::string& registry, Role role, RegistrySettings settings);

  // The shared client; created on first use.
  upstream::RegistryClient& Get(const std::string& registry, Role role);

 private:
  upstream::ClientOptions base_;
  std::shared_ptr<upstream::CredentialResolver> source_credentials_;
  std::shared_ptr<upstream::CredentialResolver> destination_credentials_;
  std::mutex mu_;
  std::map<std::pair<std::string, Role>, RegistrySettings> settings_;
  std::map<std::pair<std::string, Role>, std::unique_ptr<upstream::RegistryClient>> clients_;
};

}  // namespace regcache::copy
